"""The label store: queueing, leases and overlap, skip and resume, idempotent and conflicting labels, tokens."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from rlhf_assets.labeling.store import LabelError, LabelPacing, LabelStore
from rlhf_assets.labeling.tasks import Choice, TaskFileError, batch_id, build_tasks, read_tasks, write_tasks
from rlhf_assets.presets import HumanEvalSpec
from tests.labeling_helpers import fixed_order, queue_tasks, responses_table

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    return LabelStore(tmp_path / "labels.sqlite")


def test_database_is_in_wal_mode_and_tokens_are_stored_as_digests(store: LabelStore) -> None:
    token = store.add_annotator("alice")
    assert store.annotator_for_token(token) == "alice"
    assert store.annotator_for_token(token + "x") is None
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for file in store.path.parent.iterdir():
        assert token.encode() not in file.read_bytes()
    with pytest.raises(LabelError, match="already exists"):
        store.add_annotator("alice")
    new = store.reset_token("alice")
    assert store.annotator_for_token(token) is None and store.annotator_for_token(new) == "alice"


def test_blinding_comes_from_a_secret_and_task_ids_reveal_nothing() -> None:
    """Issue 15 (5): the order was drawn from `human_eval.seed = 0`, so `default_rng(0)` predicted which side is
    RLHF for 100 of 100 tasks, and ids were `<batch>-<prompt_id>`. Now two builds from the same data differ."""
    frame = responses_table(100)
    first, again = build_tasks(frame), build_tasks(frame)
    shown = [t.rlhf_shown_as == "A" for t in first]
    assert shown != [t.rlhf_shown_as == "A" for t in again], "the order is not reproducible from the data"
    assert shown != fixed_order(100, 0), "nor from the old seed"
    assert 25 < sum(shown) < 75
    assert batch_id(first) == batch_id(again), "the batch is the responses' hash"
    assert {t.task_id for t in first}.isdisjoint(t.task_id for t in again)
    assert all(re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]{16}", t.task_id) for t in first), "no prompt id in task ids"
    assert "seed" not in HumanEvalSpec.model_fields
    for task in first:
        rlhf = task.response_a if task.rlhf_shown_as == "A" else task.response_b
        assert rlhf.startswith("rlhf answer")
        assert task.outcome(Choice(task.rlhf_shown_as)) == "win"
        assert task.outcome(Choice.tie) == "tie"
        assert "rlhf" not in str(task.blinded().keys()) and "sft" not in str(task.blinded().keys())
    fixed = build_tasks(frame, rlhf_first=fixed_order(100, 3))
    assert [t.rlhf_shown_as == "A" for t in fixed] == fixed_order(100, 3)


def test_registering_the_same_responses_again_keeps_the_first_order_and_its_labels(store: LabelStore) -> None:
    frame = responses_table(6)
    first = build_tasks(frame)
    stored = store.register_batch(first, batch_id(first), 1, source="test", guidelines="test guidelines")
    assert stored == first
    store.add_annotator("a")
    store.submit("a", first[0].task_id, "A")
    redrawn = build_tasks(frame)
    assert store.register_batch(redrawn, batch_id(redrawn), 1, source="test", guidelines="test guidelines") == first
    assert store.progress(batch_id(first)).tasks == 6 and len(store.labels(batch_id(first))) == 1


def test_the_task_file_is_owner_only(tmp_path: Path) -> None:
    import stat

    write_tasks(build_tasks(responses_table(2)), tmp_path / "tasks.jsonl")
    assert stat.S_IMODE((tmp_path / "tasks.jsonl").stat().st_mode) == 0o600


def test_task_file_round_trip_and_errors(tmp_path: Path) -> None:
    tasks = build_tasks(responses_table(3), rlhf_first=fixed_order(3, 0))
    path = tmp_path / "tasks.jsonl"
    write_tasks(tasks, path)
    assert read_tasks(path) == tasks
    path.write_text(path.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(TaskFileError, match=r"tasks.jsonl:2: not JSON"):
        read_tasks(path)
    path.write_text('{"task_id": "x"}\n')
    with pytest.raises(TaskFileError, match=r":1: missing field 'prompt_id'"):
        read_tasks(path)


def test_next_task_resumes_skips_and_respects_overlap(store: LabelStore) -> None:
    tasks = queue_tasks(store, 3, overlap=1)
    batch = store.active_batch()
    for name in ("a", "b"):
        store.add_annotator(name)
    first = store.next_task("a", batch)
    assert first == tasks[0]
    assert store.next_task("a", batch) == tasks[0]  # resume: the leased task again
    assert store.next_task("b", batch) == tasks[1]  # tasks[0] is leased to a, overlap 1
    store.skip("a", tasks[0].task_id)
    assert store.next_task("a", batch) == tasks[2]  # tasks[1] is leased to b; skipped tasks come last
    store.submit("b", tasks[1].task_id, "A")
    store.submit("a", tasks[2].task_id, "tie")
    assert store.next_task("a", batch) == tasks[0]  # only the skipped one is left
    store.submit("a", tasks[0].task_id, "B", "  close call ")
    assert store.next_task("a", batch) is None and store.next_task("b", batch) is None
    progress = store.progress(batch)
    assert progress.complete and progress.labels == 3 and progress.required_labels == 3
    assert [label.comment for label in store.labels(batch)][-1] == "close call"
    assert {label.rlhf_shown_as for label in store.labels(batch)} <= {"A", "B"}


def test_overlap_two_needs_two_distinct_annotators(store: LabelStore) -> None:
    tasks = queue_tasks(store, 1, overlap=2)
    batch = store.active_batch()
    for name in ("a", "b", "c"):
        store.add_annotator(name)
    assert store.next_task("a", batch) == tasks[0]
    assert store.next_task("b", batch) == tasks[0]
    assert store.next_task("c", batch) is None  # two leases already fill the overlap
    store.submit("a", tasks[0].task_id, "A")
    assert not store.progress(batch).complete
    store.submit("b", tasks[0].task_id, "B")
    assert store.progress(batch).complete


def test_bad_labels_are_refused_and_nothing_stored_is_lost(store: LabelStore) -> None:
    tasks = queue_tasks(store, 2)
    batch = store.active_batch()
    store.add_annotator("a")
    stored, created = store.submit("a", tasks[0].task_id, "A", "first")
    assert created
    again, created = store.submit("a", tasks[0].task_id, "A", "first")
    assert not created and again == stored  # a retried submit is idempotent
    with pytest.raises(LabelError, match="already labelled") as conflict:
        store.submit("a", tasks[0].task_id, "B")
    assert conflict.value.status == 409
    with pytest.raises(LabelError, match="unknown task") as unknown:
        store.submit("a", "nope-1", "A")
    assert unknown.value.status == 404
    with pytest.raises(LabelError, match="choice must be one of") as bad:
        store.submit("a", tasks[1].task_id, "C")
    assert bad.value.status == 400
    with pytest.raises(LabelError, match="limit is"):
        store.submit("a", tasks[1].task_id, "A", "x" * 5000)
    assert store.labels(batch) == [stored]


def test_reregistering_a_batch_keeps_its_labels_and_switches_the_active_batch(store: LabelStore) -> None:
    old = queue_tasks(store, 2)
    store.add_annotator("a")
    store.submit("a", old[0].task_id, "A")
    old_batch = store.active_batch()
    new = build_tasks(responses_table(5), rlhf_first=fixed_order(5, 0))
    store.register_batch(new, batch_id(new), 1, source="test", guidelines="test guidelines")
    assert store.active_batch() == batch_id(new) != old_batch
    store.register_batch(old, old_batch, 1, source="test", guidelines="test guidelines")
    assert store.active_batch() == old_batch
    assert len(store.labels(old_batch)) == 1


def test_database_and_its_new_directory_are_owner_only(tmp_path: Path) -> None:
    """Issue 15 (10): labels.sqlite holds the un-blinding key and comments; it was 0644 in a 0755 directory."""
    import stat

    store = LabelStore(tmp_path / "labeling" / "labels.sqlite")
    assert stat.S_IMODE((tmp_path / "labeling").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_labels_only_where_leased_or_still_open_in_the_active_batch(store: LabelStore) -> None:
    """Issue 15 (6): a task leased to someone else, one that already has its `overlap` labels, and one of an
    inactive batch were all accepted; each is now a 409 naming the reason."""
    tasks = queue_tasks(store, 2)
    batch = store.active_batch()
    for name in ("a", "b"):
        store.add_annotator(name)
    assert store.next_task("a", batch) == tasks[0]
    with pytest.raises(LabelError, match=r"not open to b: it has 0 of 1 label\(s\) and 1 live lease") as leased:
        store.submit("b", tasks[0].task_id, "A")
    assert leased.value.status == 409
    store.submit("a", tasks[0].task_id, "A")
    with pytest.raises(LabelError, match=r"not open to b: it has 1 of 1 label\(s\)"):
        store.submit("b", tasks[0].task_id, "B")
    store.submit("b", tasks[1].task_id, "tie")  # never offered, but open: no labels, no other lease
    newer = build_tasks(responses_table(3), rlhf_first=fixed_order(3, 5))
    store.register_batch(newer, batch_id(newer), 1, source="test", guidelines="test guidelines")
    with pytest.raises(LabelError, match="no longer the active batch") as inactive:
        store.submit("a", tasks[1].task_id, "A")
    assert inactive.value.status == 409
    assert [label.task_id for label in store.labels(batch)] == [tasks[0].task_id, tasks[1].task_id]


def test_guidelines_are_recorded_with_the_batch_and_acknowledged_once(store: LabelStore) -> None:
    """Issue 16 (8): the text annotators read is kept with the batch; other guidelines make another batch."""
    frame = responses_table(3)
    tasks = build_tasks(frame, guidelines="Judge helpfulness.")
    store.register_batch(tasks, batch_id(tasks), 1, source="test", guidelines="Judge helpfulness.")
    assert store.guidelines(batch_id(tasks)) == "Judge helpfulness."
    assert batch_id(build_tasks(frame, guidelines="Judge harmlessness.")) != batch_id(tasks)
    assert batch_id(build_tasks(frame, guidelines="Judge helpfulness.")) == batch_id(tasks)
    store.add_annotator("a")
    assert not store.has_acknowledged("a", batch_id(tasks))
    store.acknowledge("a", batch_id(tasks))
    store.acknowledge("a", batch_id(tasks))
    assert store.has_acknowledged("a", batch_id(tasks))


def test_a_database_from_before_guidelines_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE batches (batch_id TEXT PRIMARY KEY, overlap INTEGER NOT NULL, source TEXT NOT NULL, "
                   "registered_at REAL NOT NULL, active INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO batches VALUES ('b1', 1, 'x', 0, 1)")
    store = LabelStore(path)
    assert store.guidelines("b1") == ""
    assert store.active_batches() == ["b1"], "its batch was the recipe policy's, and stays queued as such"
    new = build_tasks(responses_table(2), rlhf_first=fixed_order(2))
    store.register_batch(new, batch_id(new), 1, source="test", guidelines="g", stream="ppo_policy/human_eval_tasks")
    assert store.active_batches() == [batch_id(new)]


def test_a_batch_queued_under_ppos_unprefixed_key_stays_ppos(tmp_path: Path) -> None:
    """PPO's tasks asset was `human_eval_tasks` before every policy's keys were prefixed alike: its queued batch
    is PPO's batch under the new key, so the next PPO batch replaces it instead of queueing beside it."""
    old = LabelStore(tmp_path / "labels.sqlite")
    queued = build_tasks(responses_table(2), rlhf_first=fixed_order(2))
    old.register_batch(queued, batch_id(queued), 1, source="ppo", guidelines="g", stream="human_eval_tasks")
    store = LabelStore(tmp_path / "labels.sqlite")
    assert store.stream_of(batch_id(queued)) == "ppo_policy/human_eval_tasks"
    new = build_tasks(responses_table(3), rlhf_first=fixed_order(3))
    store.register_batch(new, batch_id(new), 1, source="ppo", guidelines="g", stream="ppo_policy/human_eval_tasks")
    assert store.active_batches() == [batch_id(new)]


def test_each_policy_keeps_its_latest_batch_queued_and_the_app_serves_the_oldest_unfinished(
        store: LabelStore) -> None:
    ppo = build_tasks(responses_table(2), rlhf_first=fixed_order(2, 1))
    dpo = build_tasks(responses_table(3), rlhf_first=fixed_order(3, 2))
    store.register_batch(ppo, batch_id(ppo), 1, source="ppo", guidelines="g", stream="ppo_policy/human_eval_tasks")
    store.register_batch(dpo, batch_id(dpo), 1, source="dpo", guidelines="g", stream="dpo_policy/human_eval_tasks")
    assert store.active_batches() == [batch_id(ppo), batch_id(dpo)]
    assert store.active_batch() == batch_id(ppo), "PPO's pairs first: it was queued first"
    store.add_annotator("a")
    for task in ppo:
        store.submit("a", task.task_id, "tie")
    assert store.active_batch() == batch_id(dpo), "PPO's batch is complete: the app moves on to DPO's"
    for task in dpo:
        store.submit("a", task.task_id, "A")
    assert store.active_batch() == batch_id(dpo), "all complete: the newest stays shown"
    newer = build_tasks(responses_table(4), rlhf_first=fixed_order(4, 3))
    store.register_batch(newer, batch_id(newer), 1, source="ppo", guidelines="g", stream="ppo_policy/human_eval_tasks")
    assert store.active_batches() == [batch_id(dpo), batch_id(newer)], "a new PPO batch replaces PPO's only"
    assert store.active_batch() == batch_id(newer)
    assert len(store.labels(batch_id(ppo))) == 2, "the replaced batch keeps its labels"


def test_an_annotator_done_with_a_batch_moves_on_while_others_still_label_it(store: LabelStore) -> None:
    """With two annotators per pair, the first one through PPO's pairs gets DPO's, not an empty queue."""
    ppo = build_tasks(responses_table(2), rlhf_first=fixed_order(2, 1))
    dpo = build_tasks(responses_table(3), rlhf_first=fixed_order(3, 2))
    store.register_batch(ppo, batch_id(ppo), 2, source="ppo", guidelines="g", stream="ppo_policy/human_eval_tasks")
    store.register_batch(dpo, batch_id(dpo), 2, source="dpo", guidelines="g", stream="dpo_policy/human_eval_tasks")
    store.add_annotator("fast")
    store.add_annotator("slow")
    for task in ppo:
        store.submit("fast", task.task_id, "tie")
    assert store.active_batch() == batch_id(ppo), "PPO's pairs still lack their second label"
    assert store.active_batch("slow") == batch_id(ppo)
    assert store.active_batch("fast") == batch_id(dpo)
    assert store.next_task("fast", batch_id(dpo)) is not None


def _live_leases(store: LabelStore, annotator: str) -> int:
    with sqlite3.connect(store.path) as db:
        return db.execute("SELECT COUNT(*) FROM assignments WHERE annotator = ? AND expires_at > strftime('%s','now')",
                          (annotator,)).fetchone()[0]


@pytest.mark.parametrize("cap", [1, 2])
def test_one_annotator_holds_no_more_leases_than_the_cap(tmp_path: Path, cap: int) -> None:
    """Three policies' batches queued at once (one per stream): an annotator who opens all of them, again and
    again, and skips around, keeps at most `cap` tasks from the others; the oldest lease gives way."""
    store = LabelStore(tmp_path / "labels.sqlite", max_leases_per_annotator=cap)
    batches = []
    for stream in ("ppo_policy", "dpo_policy", "rloo_policy"):
        tasks = build_tasks(responses_table(2), rlhf_first=fixed_order(2), guidelines="g")
        store.register_batch(tasks, f"{stream}-batch", 1, source="test", guidelines="g", stream=stream)
        batches.append((f"{stream}-batch", tasks))
    for name in ("hoarder", "other"):
        store.add_annotator(name)
    for _ in range(3):
        for batch, _ in batches:
            held = store.next_task("hoarder", batch)
            store.skip("hoarder", held.task_id)
            store.next_task("hoarder", batch)
            assert _live_leases(store, "hoarder") <= cap
    assert _live_leases(store, "hoarder") == cap
    first_batch, first_tasks = batches[0]
    offered = {store.next_task("other", first_batch).task_id}  # the oldest lease gave way: both tasks are open
    store.skip("other", next(iter(offered)))
    offered.add(store.next_task("other", first_batch).task_id)
    assert offered == {task.task_id for task in first_tasks}
    with pytest.raises(ValueError, match="at least 1"):
        LabelStore(tmp_path / "labels.sqlite", max_leases_per_annotator=0)


def test_labels_and_skips_count_only_after_time_on_the_pair_and_up_to_the_cap(tmp_path: Path, monkeypatch) -> None:
    """Issue 28 (7): `/api/next` + `/api/skip` enumerated a batch and 20 "tie" labels finished it in 2.8 s. Under
    pacing a label or skip needs the pair shown for `min_seconds_per_pair`, and one annotator gives at most
    `max_labels_per_annotator` labels per batch; the results see each annotator's count and median time."""
    clock = [1000.0]
    monkeypatch.setattr("rlhf_assets.labeling.store.time.time", lambda: clock[0])
    store = LabelStore(tmp_path / "labels.sqlite",
                       pacing=LabelPacing(min_seconds_per_pair=5, max_labels_per_annotator=2))
    tasks = queue_tasks(store, 4)
    store.add_annotator("alice")
    batch = store.active_batch()
    with pytest.raises(LabelError, match="is not shown to alice now: ask for it first") as unasked:
        store.submit("alice", tasks[0].task_id, "tie")
    assert unasked.value.status == 409
    first = store.next_task("alice", batch)
    clock[0] += 1
    with pytest.raises(LabelError, match=r"a skip counts after 5 s on the pair; task .* was shown 1.0 s ago") as early:
        store.skip("alice", first.task_id)
    assert early.value.status == 425
    assert store.next_task("alice", batch).task_id == first.task_id, "a reload keeps the pair and its clock"
    clock[0] += 4
    store.submit("alice", first.task_id, "tie")
    second = store.next_task("alice", batch)
    clock[0] += 7
    store.submit("alice", second.task_id, "A")
    assert store.next_task("alice", batch) is None, "the cap: two labels per annotator in this batch"
    (summary,) = store.annotator_summary(batch)
    assert (summary.annotator, summary.labels, summary.median_seconds_on_pair) == ("alice", 2, 6.0)


@pytest.mark.parametrize(("name", "message"), [
    ("аlice", "mixes scripts (CYRILLIC, LATIN)"),           # Cyrillic а
    ("ａｌｉｃｅ", "is not in normal form"),                      # fullwidth
    ("a" * 100_000, "must be 1 to 40 characters"),
    ("a1ice", "looks like the existing annotator 'alice'"),
    ("ALICE", "looks like the existing annotator 'alice'"),
    ("al ice", "must be letters or digits"),
    ("-alice", "must be letters or digits"),
])
def test_annotator_names_cannot_pass_for_another(store: LabelStore, name: str, message: str) -> None:
    store.add_annotator("alice")
    with pytest.raises(LabelError, match=re.escape(message)):
        store.add_annotator(name)
    assert store.annotators() == ["alice"]
    store.add_annotator("Zoë")  # one script, normal form: real names are welcome
    store.add_annotator("田中")


def test_a_lease_from_before_shown_times_were_kept_starts_its_clock_at_the_next_showing(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """A database migrated from before pacing gives its live leases `shown_at = 0`; the annotator is not locked
    out of the pair they were shown: the next `next` starts its clock."""
    clock = [1000.0]
    monkeypatch.setattr("rlhf_assets.labeling.store.time.time", lambda: clock[0])
    store = LabelStore(tmp_path / "labels.sqlite", pacing=LabelPacing(min_seconds_per_pair=5))
    queue_tasks(store, 2)
    store.add_annotator("ann")
    batch = store.active_batch()
    shown = store.next_task("ann", batch)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE assignments SET shown_at = 0")
    assert store.next_task("ann", batch).task_id == shown.task_id
    clock[0] += 5
    assert store.submit("ann", shown.task_id, "A")[1]
