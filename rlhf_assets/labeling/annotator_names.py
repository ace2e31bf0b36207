"""Annotator names that cannot pass for one another.

The sign-in page confirms whose token is being used by showing the account's name, and results count labels by
name. Unicode offers many ways to write a name that looks like another (Cyrillic `аlice`, fullwidth `ａｌｉｃｅ`,
`a1ice`), or one too long to read. A new name must therefore be:

- unchanged by NFKC normalisation (so fullwidth and other compatibility forms are refused, not folded silently);
- 1 to `MAX_NAME_CHARS` letters or digits of one script, with `-`, `_` or `.` between them;
- different, after folding case and well-known look-alike characters (`SKELETON`), from every existing name.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 40
SEPARATORS = "-_."
# Characters that render like a Latin letter (Cyrillic, Greek) or like each other (digits, Latin): each is read as
# the letter it passes for. Not Unicode's whole confusables table, but the look-alikes of the Latin alphabet.
SKELETON = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "һ": "h",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "к": "k", "м": "m", "т": "t", "в": "b", "н": "h", "г": "r",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "υ": "u", "ι": "i", "κ": "k", "χ": "x", "ε": "e", "η": "n",
    "0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "_": "-", ".": "-",
})


class AnnotatorNameError(ValueError):
    """A name refused for a new annotator; `conflict` when it looks like an existing one."""

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


def _script(character: str) -> str | None:
    """The script a letter belongs to (the first word of its Unicode name); None for digits and separators."""
    if not character.isalpha():
        return None
    return unicodedata.name(character, "UNKNOWN").split(" ")[0]


def skeleton(name: str) -> str:
    """What a name looks like: case, compatibility forms, look-alike letters and `rn`/`vv` folded."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(SKELETON)
    return folded.replace("rn", "m").replace("vv", "w")


def check_new_name(name: str, existing: list[str]) -> None:
    """Refuse `name` for a new annotator (with the reason) unless it follows the rules above."""
    shown = ascii(name) if len(name) <= 60 else f"{ascii(name[:60])}… ({len(name)} characters)"
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise AnnotatorNameError(f"annotator name {shown} must be 1 to {MAX_NAME_CHARS} characters")
    if unicodedata.normalize("NFKC", name) != name:
        raise AnnotatorNameError(f"annotator name {shown} is not in normal form (NFKC gives "
                                 f"{ascii(unicodedata.normalize('NFKC', name))}): type it in plain characters")
    if not all(c.isalnum() or c in SEPARATORS for c in name) or name[0] in SEPARATORS or name[-1] in SEPARATORS:
        raise AnnotatorNameError(f"annotator name {shown} must be letters or digits, with '-', '_' or '.' between")
    scripts = {script for c in name if (script := _script(c)) is not None}
    if len(scripts) > 1:
        raise AnnotatorNameError(f"annotator name {shown} mixes scripts ({', '.join(sorted(scripts))}): a name "
                                 "keeps to one, so it cannot imitate another")
    looks = skeleton(name)
    for other in existing:
        if other == name:
            raise AnnotatorNameError(f"annotator {name!r} already exists (use `reset-token` for a new token)",
                                     conflict=True)
        if skeleton(other) == looks:
            raise AnnotatorNameError(f"annotator name {shown} looks like the existing annotator {ascii(other)}",
                                     conflict=True)
