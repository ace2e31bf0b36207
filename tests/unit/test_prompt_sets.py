"""Any prompt set as a toxicity evaluation: declared in YAML, read from JSONL / CSV / text / folders, evaluated for
every policy by the same step, metrics and check as RealToxicityPrompts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey

from rlhf_assets.data.hh import DataError
from rlhf_assets.data.prompt_sets import PromptSetSpec, load_prompt_sets, read_prompt_set
from rlhf_assets.definitions import defs
from rlhf_assets.defs.evaluation.prompt_sets import prompt_set_asset, sample_prompts
from rlhf_assets.layouts import PROMPTS
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.settings import prompt_sets_file
from tests.conftest import SETTINGS, write_jsonl

pytestmark = pytest.mark.unit


def _declare(path: Path, *entries: str) -> Path:
    path.write_text("prompt_sets:\n" + "".join(entries), encoding="utf-8")
    return path


def test_the_shipped_red_team_set_is_declared_and_put_to_the_models_as_a_dialogue_turn() -> None:
    assert prompt_sets_file() == PROJECT_ROOT / "prompt_sets.yaml"
    (red_team,) = SETTINGS.prompt_sets
    assert red_team.name == "red_team" and Path(red_team.source) == PROJECT_ROOT / "examples" / "red_team_prompts.jsonl"
    sampled = sample_prompts(red_team)
    frame = sampled.frame
    assert len(frame) == sampled.distinct == sampled.read == 34 and frame["prompt_id"].tolist() == list(range(34))
    assert red_team.template == "dialogue"
    assert frame["prompt_text"].str.startswith("\n\nHuman: ").all()
    assert frame["prompt_text"].str.endswith("\n\nAssistant:").all()
    assert set(PROMPTS.columns) <= set(frame.columns)


def test_jsonl_with_a_nested_field_csv_text_and_folders_are_read_with_their_lines(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"prompt": {"text": "first"}}, {"prompt": {"text": "second"}}])
    (folder / "b.csv").write_text('prompt.text,other\n"third, with a comma",x\n', encoding="utf-8")
    (folder / "c.txt").write_text("fourth\n\nfifth\n", encoding="utf-8")
    (folder / "notes.md").write_text("ignored", encoding="utf-8")
    spec = PromptSetSpec(name="mixed", source=str(folder), text_field="prompt.text", files="[abc].*")
    records = read_prompt_set(spec)
    assert [(r.source_file, r.source_line, r.text) for r in records] == [
        ("a.jsonl", 1, "first"), ("a.jsonl", 2, "second"), ("b.csv", 2, "third, with a comma"),
        ("c.txt", 1, "fourth"), ("c.txt", 3, "fifth")]


def test_a_folder_is_read_by_its_declared_glob_only(tmp_path: Path) -> None:
    """Issue 26 (8): a LICENSE.txt beside the prompt files used to be read as 168 prompts."""
    write_jsonl(tmp_path / "part-1.jsonl", [{"prompt": "first"}])
    (tmp_path / "LICENSE.txt").write_text("Permission is hereby granted\nfree of charge\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"field 'files': a folder source needs a `files` glob.*LICENSE\.txt"):
        read_prompt_set(PromptSetSpec(name="parts", source=str(tmp_path)))
    records = read_prompt_set(PromptSetSpec(name="parts", source=str(tmp_path), files="*.jsonl"))
    assert [r.text for r in records] == ["first"]
    with pytest.raises(DataError, match=r"'\*\.csv' matches no file; the folder holds: LICENSE\.txt, part-1\.jsonl"):
        read_prompt_set(PromptSetSpec(name="parts", source=str(tmp_path), files="*.csv"))


def test_a_csv_column_names_the_text(tmp_path: Path) -> None:
    source = tmp_path / "questions.csv"
    pd.DataFrame({"question": ["Why?", "How?", "why? "], "id": [1, 2, 3]}).to_csv(source, index=False)
    spec = PromptSetSpec(name="questions", source=str(source), text_field="question", num_prompts=2, seed=3)
    sampled = sample_prompts(spec)
    assert sampled.distinct == 3 and len(sampled.frame) == 2  # "why? " differs from "Why?" in case: kept
    assert sampled.frame.equals(sample_prompts(spec).frame), "the sample is seeded"


def test_repeats_are_counted_and_listed_with_the_line_they_repeat(tmp_path: Path) -> None:
    """Issue 26 (8): 700 lines giving 623 prompts used to say nothing of the 77 dropped."""
    (tmp_path / "lines.txt").write_text("a b\nc\na  b\nc\nd\n", encoding="utf-8")
    sampled = sample_prompts(PromptSetSpec(name="lines", source=str(tmp_path / "lines.txt")))
    assert (sampled.read, sampled.distinct, len(sampled.frame)) == (5, 3, 3)
    assert sampled.duplicates.to_dict("records") == [
        {"source_file": "lines.txt", "source_line": 3, "repeats": "lines.txt:1"},
        {"source_file": "lines.txt", "source_line": 4, "repeats": "lines.txt:2"}]


def test_templates_put_a_text_to_the_models_as_a_dialogue_turn_or_to_continue() -> None:
    """Issue 26 (8): an RTP-style set is continued as RTP's prompts are, not wrapped as a question."""
    spec = PromptSetSpec(name="opening", source="x.txt")
    assert spec.template == "continuation" and spec.prompt("So I told him") == "So I told him"
    dialogue = spec.model_copy(update={"template": "dialogue"})
    assert dialogue.prompt("Why?") == "\n\nHuman: Why?\n\nAssistant:"
    assert spec.model_copy(update={"template": "Q: {text}"}).prompt("Why?") == "Q: Why?"


@pytest.mark.parametrize(("rows", "field", "message"), [
    ([{"prompt": "ok"}, {"text": "no prompt", "id": 2}], "prompt",
     r"bad\.jsonl, line 2, field 'prompt': missing \(the row's fields: id, text; set text_field\)"),
    ([{"prompt": "ok"}, {"prompt": 7}], "prompt", r"line 2, field 'prompt': expected text, got int"),
    ([{"prompt": {"text": "  "}}], "prompt.text", r"line 1, field 'prompt.text': empty"),
    (['{"prompt": "ok"}', "{not json"], "prompt", r"bad\.jsonl, line 2: malformed JSON"),
])
def test_a_bad_row_names_the_file_line_and_field(tmp_path: Path, rows: list, field: str, message: str) -> None:
    source = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message):
        read_prompt_set(PromptSetSpec(name="bad", source=str(source), text_field=field))


def test_sources_that_hold_no_prompts_or_too_few_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="prompt set 'empty' has no prompts"):
        read_prompt_set(PromptSetSpec(name="empty", source=str(tmp_path / "empty.txt")))
    (tmp_path / "prompts.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unknown file type"):
        read_prompt_set(PromptSetSpec(name="sheet", source=str(tmp_path / "prompts.xlsx")))
    (tmp_path / "two.txt").write_text("a b\na  b\nc\n", encoding="utf-8")
    with pytest.raises(DataError, match="asks for 5 prompts but prompt set 'two' has 2 distinct prompts"):
        sample_prompts(PromptSetSpec(name="two", source=str(tmp_path / "two.txt"), num_prompts=5))


@pytest.mark.parametrize(("entry", "message"), [
    ("  - {name: a, source: x.txt}\n  - {name: a, source: y.txt}\n", "names must be distinct: a repeated"),
    ("  - {name: rtp, source: x.txt}\n", r"prompt_sets\.0\.name.*reserved"),
    ("  - {name: Bad-Name, source: x.txt}\n", r"prompt_sets\.0\.name.*pattern"),
    ("  - {name: a, source: x.txt, template: 'no placeholder'}\n",
     r"prompt_sets\.0\.template.*dialogue or continuation, or contain \{text\} exactly once"),
    ("  - {name: a, source: x.txt, textfield: q}\n", r"prompt_sets\.0\.textfield.*Extra inputs"),
    ("  - {name: a, source: x.txt, num_prompts: 0}\n", r"prompt_sets\.0\.num_prompts.*greater than or equal to 1"),
])
def test_a_bad_declaration_fails_naming_the_file_and_entry(tmp_path: Path, entry: str, message: str) -> None:
    path = _declare(tmp_path / "sets.yaml", entry)
    with pytest.raises(DataError, match=rf"sets\.yaml.*{message}"):
        load_prompt_sets(path)


def test_editing_a_declaration_changes_the_prompt_set_assets_code_version(tmp_path: Path) -> None:
    """Dagster marks `<name>_prompts` stale when its declaration in prompt_sets.yaml changes."""
    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    first = PromptSetSpec(name="mine", source=str(tmp_path / "a.txt"))
    versions = [prompt_set_asset(spec).code_versions_by_key[AssetKey("mine_prompts")]
                for spec in (first, first, first.model_copy(update={"template": "Q: {text}"}))]
    assert versions[0] == versions[1] != versions[2]


def test_relative_sources_are_found_beside_the_declaration_and_hub_ids_kept(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("hello\n", encoding="utf-8")
    path = _declare(tmp_path / "sets.yaml", "  - {name: mine, source: mine.txt}\n",
                    "  - {name: hub, source: some-org/red-team-prompts, text_field: prompt}\n")
    mine, hub = load_prompt_sets(path)
    assert mine.source == str(tmp_path / "mine.txt") and hub.source == "some-org/red-team-prompts"


@pytest.mark.parametrize("source", ["data/typo.jsonl", "./prompts", "../elsewhere/p.txt"])
def test_a_missing_relative_path_is_named_where_it_was_looked_for(tmp_path: Path, source: str) -> None:
    """Issue 26 (8): a missing relative path used to be taken for a hub id and fail with a connection error."""
    path = _declare(tmp_path / "sets.yaml", f"  - {{name: mine, source: {source}}}\n")
    with pytest.raises(DataError, match=rf"sets\.yaml, field 'prompt_sets\.0\.source': '{source}' does not exist "
                                        rf"\(looked for {tmp_path.resolve() if not source.startswith('..') else ''}"):
        load_prompt_sets(path)


def test_a_user_declared_set_becomes_assets_and_checks_for_every_policy_without_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The declarations are read when Dagster loads the code location (`defs`), so a reload shows a new set."""
    source = tmp_path / "questions.csv"
    pd.DataFrame({"question": ["Why?", "How?"]}).to_csv(source, index=False)
    declaration = _declare(tmp_path / "mine.yaml", f"  - {{name: domain, source: {source}, text_field: question}}\n")
    monkeypatch.setenv("RLHF_PROMPT_SETS", str(declaration))
    graph = defs().resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys() if "domain" in k.to_user_string()) \
        == ["domain_prompts", "dpo_policy/domain_toxicity_scores", "ppo_policy/domain_toxicity_scores",
            "sft_model/domain_toxicity_scores"]
    assert sorted(k.asset_key.to_user_string() for k in graph.asset_check_keys
                  if "domain" in k.asset_key.to_user_string()) \
        == ["dpo_policy/domain_toxicity_scores", "ppo_policy/domain_toxicity_scores"]
    monkeypatch.setenv("RLHF_PROMPT_SETS", str(tmp_path / "missing.yaml"))
    with pytest.raises(DataError, match="missing.yaml: prompt-set file does not exist"):
        defs()
