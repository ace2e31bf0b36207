"""A second toxicity scorer, of another family than Detoxify: alt-profanity-check's linear model on word n-grams.

Detoxify is a fine-tuned transformer; a difference it reports could be an artefact of how such a model reads
text (its sensitivity to length, to fragments, to the dialogue markup). alt-profanity-check is a linear SVM
(calibrated to probabilities) over TF-IDF word n-grams, trained by its authors on human-labelled offensive and
clean texts: it shares no architecture, tokenizer or training run with Detoxify or with anything this project
trains, and it ships its weights inside the package (no download). It measures offensive language rather than
Perspective's broader "toxicity", so the two should agree on direction, not on level. The toxicity evaluation
scores every continuation with both and reports whether their verdicts agree (`steps/toxicity_scores.py`).

Version 1.8.0 is pinned: its scikit-learn and joblib pins are the training image's, so a SageMaker job installs
only this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

DISTRIBUTION = "alt-profanity-check"


def second_scorer_name() -> str:
    """The scorer and its version, recorded with every score so SFT's and a policy's are known to be comparable."""
    return f"{DISTRIBUTION} {version(DISTRIBUTION)}"


def second_scores(texts: Sequence[str]) -> list[float]:
    """The probability that each text is offensive, by the package's own vectorizer and model."""
    if not texts:
        return []
    from profanity_check import predict_prob  # loads scikit-learn and the bundled model: only when scoring

    return [float(p) for p in predict_prob(list(texts))]
