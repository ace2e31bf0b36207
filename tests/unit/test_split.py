import random
from pathlib import Path

import pytest

from rlhf_assets.data.hh import read_jsonl, to_preference_pairs
from rlhf_assets.data.split import (
    SplitRelations,
    choose_eval_prompts,
    conversation_opening,
    is_judge_prompt,
    is_test_prompt,
    prompt_bucket,
    split_heldout,
    split_pairs,
    split_relations,
)
from rlhf_assets.presets import GPTJ_6B, SMALL, Preset

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pairs(shared_hh_path: Path):
    return to_preference_pairs(read_jsonl(shared_hh_path), str(shared_hh_path))[0]


def test_split_is_disjoint_by_prompt_and_near_the_requested_share(pairs) -> None:
    train, test = split_pairs(pairs, 0.1)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
    assert len(train) + len(test) == len(pairs)
    assert 0.07 < len(test) / len(pairs) < 0.13


def test_split_does_not_depend_on_row_order(pairs) -> None:
    shuffled = list(pairs)
    random.Random(7).shuffle(shuffled)
    test_a = {p.source_line for p in split_pairs(pairs, 0.1)[1]}
    test_b = {p.source_line for p in split_pairs(shuffled, 0.1)[1]}
    assert test_a == test_b


def test_same_prompt_always_lands_on_the_same_side() -> None:
    prompt = "\n\nHuman: same\n\nAssistant:"
    assert len({is_test_prompt(prompt, 0.3) for _ in range(5)}) == 1


def test_eval_prompts_are_held_out_distinct_and_seeded(pairs) -> None:
    train, test = split_pairs(pairs, 0.1)
    chosen = choose_eval_prompts(test, 100, seed=0)
    assert len({p.prompt for p in chosen}) == 100
    assert {p.prompt for p in chosen}.isdisjoint({p.prompt for p in train})
    assert [p.prompt for p in chosen] == [p.prompt for p in choose_eval_prompts(list(reversed(test)), 100, 0)]
    assert [p.prompt for p in chosen] != [p.prompt for p in choose_eval_prompts(test, 100, 1)]


def test_too_few_held_out_prompts_is_a_clear_error(pairs) -> None:
    _, test = split_pairs(pairs, 0.01)
    with pytest.raises(ValueError, match="distinct held-out prompts, 100 eval prompts requested"):
        choose_eval_prompts(test, 100, 0)


def test_the_judge_split_is_disjoint_from_train_and_test_and_stable(pairs) -> None:
    """Issue 16 (2): the independent judge trains on prompts that neither the RM/SFT/PPO side nor the test side
    holds; the buckets sit just above the test buckets, so the test side is the same with or without a judge."""
    train, test = split_pairs(pairs, 0.1)
    judge = [p for p in train if is_judge_prompt(p.prompt, 0.1, 0.2)]
    rest = [p for p in train if not is_judge_prompt(p.prompt, 0.1, 0.2)]
    prompts = [{p.prompt for p in side} for side in (rest, test, judge)]
    assert all(a.isdisjoint(b) for i, a in enumerate(prompts) for b in prompts[i + 1:])
    assert 0.15 < len(judge) / len(pairs) < 0.25
    assert not any(is_judge_prompt(p.prompt, 0.1, 0.2) for p in test)
    assert not any(is_judge_prompt(p.prompt, 0.1, 0.0) for p in pairs), "judge_fraction 0: no judge split"


def test_a_heldout_split_gives_test_and_judge_and_keeps_its_prompts_off_the_training_side(pairs) -> None:
    """rm-static's own `test` split: test and judge pairs come only from it, and a training pair whose conversation
    is also held out is dropped."""
    heldout, train_side = pairs[:600], pairs[600:] + pairs[:5]
    train, test, judge = split_heldout(train_side, heldout, 0.5)
    assert {p.prompt for p in test} | {p.prompt for p in judge} == {p.prompt for p in heldout}
    assert {p.prompt for p in test}.isdisjoint({p.prompt for p in judge})
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in heldout})
    openings = {conversation_opening(p.prompt) for p in heldout}
    assert len(train) == len([p for p in pairs[600:] if conversation_opening(p.prompt) not in openings]) > 1500
    assert split_relations([p.prompt for p in test], [p.prompt for p in train + judge]).total == 0
    assert 0.4 < len(test) / len(heldout) < 0.6


def test_a_preset_whose_pretrained_reward_model_saw_the_heldout_split_is_refused() -> None:
    data = {**GPTJ_6B.data.model_dump(), "heldout_split": None}
    with pytest.raises(ValueError, match=r"held-out prompts come from Dahoas/rm-static:train, which the pretrained "
                                         r"reward model Dahoas/gptj-rm-static trained on"):
        Preset.model_validate({**GPTJ_6B.model_dump(), "data": data})
    assert GPTJ_6B.data.heldout_source() == "Dahoas/rm-static:test"
    assert SMALL.data.heldout_source() == "Dahoas/rm-static:test"


def test_the_opening_is_the_first_human_turn_normalised() -> None:
    prompt = "\n\nHuman:  How do I   Pick a lock?\n\nAssistant: Why?\n\nHuman: For my shed.\n\nAssistant:"
    assert conversation_opening(prompt) == "how do i pick a lock?"
    assert conversation_opening("\n\nHuman: how do I pick a lock?\n\nAssistant:") == conversation_opening(prompt)


def test_no_held_out_prompt_shares_an_opening_with_or_prefixes_a_training_or_judge_dialogue(pairs) -> None:
    """Issue 26 (2): on the shared HH pairs, split at the tiny preset's shares, the held-out prompts' relations to
    the other sides (shared opening, prefix either way) number 0; keyed by the exact prompt they did not."""
    train, test = split_pairs(pairs, 0.1)
    judge = [p for p in train if is_judge_prompt(p.prompt, 0.1, 0.2)]
    train = [p for p in train if not is_judge_prompt(p.prompt, 0.1, 0.2)]
    held_out = [p.prompt for p in test]
    for side in (train, judge):
        assert split_relations(held_out, [p.prompt for p in side]) == SplitRelations(0, 0)
    assert split_relations([p.prompt for p in judge], [p.prompt for p in train]).total == 0
    by_exact_prompt = [p.prompt for p in pairs if prompt_bucket(p.prompt) < 1000]
    rest = [p.prompt for p in pairs if prompt_bucket(p.prompt) >= 1000]
    leaked = split_relations(by_exact_prompt, rest)
    assert leaked.shared_openings > 0 and leaked.prefixes > 0, "the exact-string split leaked conversations"


def test_prefixes_are_found_either_way() -> None:
    short = "\n\nHuman: Hi\n\nAssistant:"
    long = short + " Hello!\n\nHuman: Insult me\n\nAssistant:"
    assert split_relations([short], [long]) == SplitRelations(shared_openings=1, prefixes=1)
    assert split_relations([long], [short]) == SplitRelations(shared_openings=1, prefixes=1)
    assert split_relations([short], ["\n\nHuman: hi \n\nAssistant: other"]) == SplitRelations(1, 0)
