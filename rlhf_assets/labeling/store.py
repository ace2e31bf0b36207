"""The label store: one SQLite database in WAL mode shared by the labeling app, the sensors and the results assets.

WAL lets the labels-complete sensors and each policy's `human_eval_results` read while annotators write. Every
write is one short `BEGIN IMMEDIATE` transaction, so concurrent annotators serialise on the database lock instead
of losing or duplicating labels, and a (task, annotator) pair can hold one label only (a UNIQUE constraint, not
app logic). Annotator tokens are stored as SHA-256 digests; the token itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from rlhf_assets.labeling.annotator_names import AnnotatorNameError, check_new_name
from rlhf_assets.labeling.tasks import Choice, PairwiseTask

ASSIGNMENT_LEASE_SECONDS = 600
DEFAULT_STREAM = "ppo_policy/human_eval_tasks"  # the recipe policy's tasks asset
UNPREFIXED_STREAM = "human_eval_tasks"  # the same asset's key before every policy's keys were prefixed
MAX_COMMENT_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, overlap INTEGER NOT NULL CHECK (overlap >= 1), source TEXT NOT NULL,
    registered_at REAL NOT NULL, active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL REFERENCES batches(batch_id), position INTEGER NOT NULL,
    prompt_id INTEGER NOT NULL, prompt TEXT NOT NULL, response_a TEXT NOT NULL, response_b TEXT NOT NULL,
    rlhf_shown_as TEXT NOT NULL CHECK (rlhf_shown_as IN ('A', 'B'))
);
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    label_id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES tasks(task_id), annotator TEXT NOT NULL REFERENCES annotators(name),
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')), comment TEXT NOT NULL DEFAULT '',
    rlhf_shown_as TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (task_id, annotator)
);
CREATE TABLE IF NOT EXISTS skips (
    task_id TEXT NOT NULL, annotator TEXT NOT NULL, skipped_at REAL NOT NULL, PRIMARY KEY (task_id, annotator)
);
CREATE TABLE IF NOT EXISTS assignments (
    task_id TEXT NOT NULL, annotator TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (task_id, annotator)
);
CREATE INDEX IF NOT EXISTS tasks_by_batch ON tasks (batch_id, position);
CREATE TABLE IF NOT EXISTS acknowledgements (
    batch_id TEXT NOT NULL REFERENCES batches(batch_id), annotator TEXT NOT NULL REFERENCES annotators(name),
    acknowledged_at REAL NOT NULL, PRIMARY KEY (batch_id, annotator)
);
"""


class LabelError(ValueError):
    """A label the store refuses; `status` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredLabel:
    """One annotator's answer to one task, as stored."""

    label_id: int
    task_id: str
    annotator: str
    choice: Choice
    comment: str
    rlhf_shown_as: str
    created_at: float


class LabelPacing(BaseModel):
    """What must stand behind a label in the app: time spent on the pair and a share of the batch per person.

    Without them one annotator could page through a batch with next + skip and finish it with 20 "tie" labels in
    a few seconds, and the results would publish as if people had read the pairs."""

    min_seconds_per_pair: float = Field(3.0, ge=0, le=3600, description="a label or skip counts only this long "
                                        "after the pair was first shown to the annotator")
    max_labels_per_annotator: int | None = Field(None, ge=1, description="labels one annotator may give per "
                                                 "batch (none: no cap)")


@dataclass(frozen=True)
class AnnotatorSummary:
    """One annotator's share of a batch."""

    annotator: str
    labels: int
    median_seconds_on_pair: float | None


@dataclass(frozen=True)
class BatchProgress:
    """How far a batch is: labels counted up to `overlap` per task, and tasks that have all theirs."""

    batch_id: str
    tasks: int
    overlap: int
    labels: int
    counted_labels: int
    complete_tasks: int

    @property
    def required_labels(self) -> int:
        return self.tasks * self.overlap

    @property
    def complete(self) -> bool:
        return self.tasks > 0 and self.complete_tasks == self.tasks


def token_digest(token: str) -> str:
    """What the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class LabelStore:
    """Tasks, annotators and labels in one SQLite file (created with its schema on first use)."""

    def __init__(self, path: Path, max_leases_per_annotator: int = 1, pacing: LabelPacing | None = None) -> None:
        """`max_leases_per_annotator`: how many tasks one annotator may hold at once (one per open tab or batch);
        past it, their oldest lease is given up, so nobody keeps tasks from others by asking for more. `pacing`:
        what a label must have behind it (time on the pair, a share of the batch); none for the store's own
        tools, the app's settings where annotators label."""
        if max_leases_per_annotator < 1:
            raise ValueError("max_leases_per_annotator must be at least 1")
        self.path, self.max_leases = Path(path), max_leases_per_annotator
        self.pacing = pacing or LabelPacing(min_seconds_per_pair=0.0)
        # It holds the un-blinding key and annotators' comments: a new directory and database are owner-only
        # (SQLite gives its -wal/-shm files the database's mode).
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            columns = {row["name"] for row in connection.execute("PRAGMA table_info(batches)")}
            if "guidelines" not in columns:  # a database from before guidelines were recorded with the batch
                connection.execute("ALTER TABLE batches ADD COLUMN guidelines TEXT NOT NULL DEFAULT ''")
            if "stream" not in columns:  # from before each policy had its own tasks (all were the recipe PPO's)
                connection.execute(f"ALTER TABLE batches ADD COLUMN stream TEXT NOT NULL DEFAULT '{DEFAULT_STREAM}'")
            # PPO's tasks asset was `human_eval_tasks` before every policy's keys were prefixed alike: its queued
            # batch stays PPO's, so the next PPO batch replaces it rather than queueing beside it.
            if connection.execute("SELECT 1 FROM batches WHERE stream = ? LIMIT 1", (UNPREFIXED_STREAM,)).fetchone():
                connection.execute("UPDATE batches SET stream = ? WHERE stream = ?",
                                   (DEFAULT_STREAM, UNPREFIXED_STREAM))
            if "shown_at" not in {row["name"] for row in connection.execute("PRAGMA table_info(assignments)")}:
                connection.execute("ALTER TABLE assignments ADD COLUMN shown_at REAL NOT NULL DEFAULT 0")
            if "seconds_on_pair" not in {row["name"] for row in connection.execute("PRAGMA table_info(labels)")}:
                connection.execute("ALTER TABLE labels ADD COLUMN seconds_on_pair REAL")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    def register_batch(
        self, tasks: Sequence[PairwiseTask], batch_id: str, overlap: int, source: str, guidelines: str,
        stream: str = DEFAULT_STREAM,
    ) -> list[PairwiseTask]:
        """Queue a batch for the app and make it its stream's active one; returns the batch's tasks as stored.

        A stream is the tasks asset that registered it (`ppo_policy/human_eval_tasks`, `dpo_policy/human_eval_tasks`):
        each policy's latest batch stays queued beside the others', and a new batch replaces only its own stream's.

        Registering a batch again (the same responses and guidelines: both go into the batch id) keeps the
        tasks, their random order and their labels from the first time: a fresh draw would otherwise orphan
        every label already given. The guidelines annotators are shown are stored with the batch.
        """
        with self._write() as db:
            known = db.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone() is not None
            if not known:
                db.execute("INSERT INTO batches (batch_id, overlap, source, registered_at, active, guidelines) "
                           "VALUES (?, ?, ?, ?, 0, ?)", (batch_id, overlap, source, time.time(), guidelines))
                db.executemany(
                    "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t.task_id, batch_id, i, t.prompt_id, t.prompt, t.response_a, t.response_b, t.rlhf_shown_as)
                     for i, t in enumerate(tasks)],
                )
            db.execute("UPDATE batches SET overlap = ?, stream = ? WHERE batch_id = ?", (overlap, stream, batch_id))
            db.execute("UPDATE batches SET active = (batch_id = ?) WHERE stream = ?", (batch_id, stream))
            rows = db.execute("SELECT * FROM tasks WHERE batch_id = ? ORDER BY position", (batch_id,)).fetchall()
        return [PairwiseTask(r["task_id"], r["prompt_id"], r["prompt"], r["response_a"], r["response_b"],
                             r["rlhf_shown_as"]) for r in rows]

    def _batch_value(self, batch_id: str, column: str) -> str:
        with self._read() as db:
            row = db.execute(f"SELECT {column} FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            raise LabelError(f"unknown batch {batch_id!r}", 404)
        return row[column]

    def guidelines(self, batch_id: str) -> str:
        """The annotator guidelines (and content warning) recorded with a batch."""
        return self._batch_value(batch_id, "guidelines")

    def acknowledge(self, annotator: str, batch_id: str) -> None:
        """Record that `annotator` was shown the batch's guidelines and content warning and chose to go on."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO acknowledgements VALUES (?, ?, ?)", (batch_id, annotator, time.time()))

    def has_acknowledged(self, annotator: str, batch_id: str) -> bool:
        """Whether `annotator` has seen this batch's guidelines (the app shows them before the first pair)."""
        with self._read() as db:
            return db.execute("SELECT 1 FROM acknowledgements WHERE batch_id = ? AND annotator = ?",
                              (batch_id, annotator)).fetchone() is not None

    def active_batches(self) -> list[str]:
        """Every stream's active batch, oldest registration first: the order the app serves them in."""
        with self._read() as db:
            rows = db.execute("SELECT batch_id FROM batches WHERE active = 1 ORDER BY registered_at, batch_id")
            return [row["batch_id"] for row in rows]

    def active_batch(self, annotator: str | None = None) -> str | None:
        """The batch the app serves now: for `annotator`, the oldest active batch with a pair they may still label
        (so one policy's pairs come before the next policy's, and nobody waits for others to finish one);
        otherwise, or when they have none, the oldest batch still lacking labels, or the newest when all are done."""
        batches = self.active_batches()
        if annotator is not None:
            now = time.time()
            with self._read() as db:
                mine = next((b for b in batches if self._open_task(db, annotator, b, now) is not None), None)
            if mine is not None:
                return mine
        return next((batch for batch in batches if not self.progress(batch).complete), batches[-1] if batches else None)

    def stream_of(self, batch_id: str) -> str:
        """The tasks asset that queued a batch (`ppo_policy/human_eval_tasks`, `dpo_policy/human_eval_tasks`, ...)."""
        return self._batch_value(batch_id, "stream")

    def batch_of(self, task_id: str) -> str:
        """The batch a task belongs to (a 404 for an unknown task)."""
        with self._read() as db:
            return self._require_task(db, task_id)["batch_id"]

    def add_annotator(self, name: str) -> str:
        """Create an annotator and return their access token (shown once; only its digest is kept).

        The name is what the sign-in page shows to confirm whose token it is, so it must not pass for another
        (`annotator_names.check_new_name`: normalised, one script, bounded, no look-alike of an existing one)."""
        token = secrets.token_urlsafe(24)
        try:
            with self._write() as db:
                existing = [row["name"] for row in db.execute("SELECT name FROM annotators")]
                try:
                    check_new_name(name, existing)
                except AnnotatorNameError as error:
                    raise LabelError(str(error), 409 if error.conflict else 400) from None
                db.execute("INSERT INTO annotators VALUES (?, ?, ?)", (name, token_digest(token), time.time()))
        except sqlite3.IntegrityError:
            raise LabelError(f"annotator {name!r} already exists (use `reset-token` for a new token)", 409) from None
        return token

    def reset_token(self, name: str) -> str:
        """A new token for an existing annotator; the old one stops working at once."""
        token = secrets.token_urlsafe(24)
        with self._write() as db:
            changed = db.execute("UPDATE annotators SET token_sha256 = ? WHERE name = ?",
                                 (token_digest(token), name)).rowcount
        if not changed:
            raise LabelError(f"no annotator named {name!r}", 404)
        return token

    def annotators(self) -> list[str]:
        with self._read() as db:
            return [row["name"] for row in db.execute("SELECT name FROM annotators ORDER BY name")]

    def annotator_for_token(self, token: str) -> str | None:
        """Who holds this token, or None (compared by digest, so timing reveals nothing about stored tokens)."""
        with self._read() as db:
            row = db.execute("SELECT name FROM annotators WHERE token_sha256 = ?", (token_digest(token),)).fetchone()
        return None if row is None else row["name"]

    def next_task(self, annotator: str, batch_id: str) -> PairwiseTask | None:
        """The task this annotator should see now, leased to them so others don't over-fill it.

        Order: the task they were last shown (resume), then unskipped tasks in batch order, then skipped ones.
        A task is offered while its labels plus other annotators' live leases are below the batch's overlap.
        """
        now = time.time()
        with self._write() as db:
            if self._reached_cap(db, annotator, batch_id):
                return None
            row = self._open_task(db, annotator, batch_id, now)
            if row is None:
                return None
            held = db.execute("SELECT shown_at FROM assignments WHERE annotator = ? AND task_id = ? AND expires_at > ?",
                              (annotator, row["task_id"], now)).fetchone()
            # a reload keeps the time it was first shown (a lease from before times were kept starts now)
            shown_at = held["shown_at"] if held is not None and held["shown_at"] else now
            db.execute("DELETE FROM assignments WHERE annotator = ? AND (task_id = ? OR expires_at <= ?)",
                       (annotator, row["task_id"], now))
            kept = [r["task_id"] for r in db.execute(
                "SELECT task_id FROM assignments WHERE annotator = ? ORDER BY expires_at DESC", (annotator,))]
            for task_id in kept[self.max_leases - 1:]:  # the oldest beyond the cap make room for this one
                db.execute("DELETE FROM assignments WHERE annotator = ? AND task_id = ?", (annotator, task_id))
            db.execute("INSERT INTO assignments (task_id, annotator, expires_at, shown_at) VALUES (?, ?, ?, ?)",
                       (row["task_id"], annotator, now + ASSIGNMENT_LEASE_SECONDS, shown_at))
        return PairwiseTask(row["task_id"], row["prompt_id"], row["prompt"], row["response_a"], row["response_b"],
                            row["rlhf_shown_as"])

    @staticmethod
    def _open_task(db: sqlite3.Connection, annotator: str, batch_id: str, now: float) -> sqlite3.Row | None:
        return db.execute(
                """
                SELECT t.*, EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.task_id
                                    AND a.annotator = :who AND a.expires_at > :now) AS mine,
                       EXISTS (SELECT 1 FROM skips s WHERE s.task_id = t.task_id AND s.annotator = :who) AS skipped
                FROM tasks t JOIN batches b ON b.batch_id = t.batch_id
                WHERE t.batch_id = :batch
                  AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.task_id = t.task_id AND l.annotator = :who)
                  AND (SELECT COUNT(*) FROM labels l WHERE l.task_id = t.task_id)
                      + (SELECT COUNT(*) FROM assignments a WHERE a.task_id = t.task_id AND a.annotator != :who
                         AND a.expires_at > :now) < b.overlap
                ORDER BY mine DESC, skipped ASC, t.position ASC
                LIMIT 1
                """,
                {"who": annotator, "batch": batch_id, "now": now},
            ).fetchone()

    def skip(self, annotator: str, task_id: str) -> None:
        """Put a task behind the annotator's other tasks and release their lease on it. Under pacing, a skip takes
        as long on the pair as a label: skipping through a batch reveals its tasks no faster than labelling."""
        with self._write() as db:
            self._require_task(db, task_id)
            self._time_on_pair(db, annotator, task_id, "skip")
            db.execute("INSERT OR REPLACE INTO skips VALUES (?, ?, ?)", (task_id, annotator, time.time()))
            db.execute("DELETE FROM assignments WHERE task_id = ? AND annotator = ?", (task_id, annotator))

    def submit(self, annotator: str, task_id: str, choice: str, comment: str = "") -> tuple[StoredLabel, bool]:
        """Store one label; returns (label, created).

        Re-sending the same answer is idempotent (created=False); a different answer to a task the annotator
        already labelled is refused with 409 and the stored label stays as it was.
        """
        try:
            parsed = Choice(choice)
        except ValueError:
            raise LabelError(f"choice must be one of A, B, tie; got {choice!r}", 400) from None
        comment = comment.strip()
        if len(comment) > MAX_COMMENT_CHARS:
            raise LabelError(f"comment is {len(comment)} characters; the limit is {MAX_COMMENT_CHARS}", 400)
        with self._write() as db:
            task = self._require_task(db, task_id)
            existing = db.execute("SELECT * FROM labels WHERE task_id = ? AND annotator = ?",
                                  (task_id, annotator)).fetchone()
            if existing is not None:
                label = _label(existing)
                if label.choice is parsed and label.comment == comment:
                    return label, False
                raise LabelError(f"{annotator} already labelled task {task_id} as {label.choice.value!r}; "
                                 "the first label is kept", 409)
            self._require_open(db, task, annotator)
            if self._reached_cap(db, annotator, task["batch_id"]):
                raise LabelError(f"{annotator} has given {self.pacing.max_labels_per_annotator} labels in batch "
                                 f"{task['batch_id']}, the most one annotator may give", 409)
            seconds = self._time_on_pair(db, annotator, task_id, "label")
            cursor = db.execute(
                "INSERT INTO labels (task_id, annotator, choice, comment, rlhf_shown_as, created_at, seconds_on_pair) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task_id, annotator, parsed.value, comment, task["rlhf_shown_as"], time.time(), seconds),
            )
            db.execute("DELETE FROM assignments WHERE task_id = ? AND annotator = ?", (task_id, annotator))
            db.execute("DELETE FROM skips WHERE task_id = ? AND annotator = ?", (task_id, annotator))
            row = db.execute("SELECT * FROM labels WHERE label_id = ?", (cursor.lastrowid,)).fetchone()
        return _label(row), True

    @staticmethod
    def _require_open(db: sqlite3.Connection, task: sqlite3.Row, annotator: str) -> None:
        """A new label is taken only for a task of an active (queued) batch that the annotator holds a lease on, or
        that still lacks labels (fewer than the batch's overlap) — never to over-fill a task or label one
        leased to someone else."""
        batch = db.execute("SELECT active, overlap FROM batches WHERE batch_id = ?", (task["batch_id"],)).fetchone()
        if not batch["active"]:
            raise LabelError(f"task {task['task_id']} belongs to batch {task['batch_id']}, which is no longer the "
                             "active batch", 409)
        now = time.time()
        leased = db.execute("SELECT annotator FROM assignments WHERE task_id = ? AND expires_at > ?",
                            (task["task_id"], now)).fetchall()
        if any(row["annotator"] == annotator for row in leased):
            return
        labelled = db.execute("SELECT COUNT(*) FROM labels WHERE task_id = ?", (task["task_id"],)).fetchone()[0]
        if labelled + len(leased) >= batch["overlap"]:
            raise LabelError(f"task {task['task_id']} is not open to {annotator}: it has {labelled} of "
                             f"{batch['overlap']} label(s) and {len(leased)} live lease(s) held by others", 409)

    def _reached_cap(self, db: sqlite3.Connection, annotator: str, batch_id: str) -> bool:
        cap = self.pacing.max_labels_per_annotator
        return cap is not None and db.execute(
            "SELECT COUNT(*) FROM labels l JOIN tasks t ON t.task_id = l.task_id WHERE t.batch_id = ? "
            "AND l.annotator = ?", (batch_id, annotator)).fetchone()[0] >= cap

    def _time_on_pair(self, db: sqlite3.Connection, annotator: str, task_id: str, action: str) -> float | None:
        """Seconds since the pair was first shown to the annotator (None if it never was); under pacing, a
        `label` or `skip` needs the pair shown to them (`next`) at least `min_seconds_per_pair` ago."""
        now = time.time()
        held = db.execute("SELECT shown_at FROM assignments WHERE task_id = ? AND annotator = ? AND expires_at > ?",
                          (task_id, annotator, now)).fetchone()
        seconds = now - held["shown_at"] if held is not None and held["shown_at"] else None
        minimum = self.pacing.min_seconds_per_pair
        if minimum > 0 and seconds is None:
            raise LabelError(f"task {task_id} is not shown to {annotator} now: ask for it first (GET /api/next), "
                             f"then {action} it", 409)
        if minimum > 0 and seconds is not None and seconds < minimum:
            raise LabelError(f"a {action} counts after {minimum:g} s on the pair; task {task_id} was shown "
                             f"{seconds:.1f} s ago", 425)
        return seconds

    def annotator_summary(self, batch_id: str) -> list[AnnotatorSummary]:
        """Per annotator of a batch: labels given and the median time on a pair, for the results to show."""
        with self._read() as db:
            rows = db.execute("SELECT l.annotator, l.seconds_on_pair FROM labels l JOIN tasks t ON "
                              "t.task_id = l.task_id WHERE t.batch_id = ? ORDER BY l.annotator", (batch_id,))
            times: dict[str, list[float | None]] = {}
            for row in rows:
                times.setdefault(row["annotator"], []).append(row["seconds_on_pair"])
        return [AnnotatorSummary(name, len(seconds), statistics.median(known) if (known := [
            s for s in seconds if s is not None]) else None) for name, seconds in times.items()]

    @staticmethod
    def _require_task(db: sqlite3.Connection, task_id: str) -> sqlite3.Row:
        task = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if task is None:
            raise LabelError(f"unknown task {task_id!r}", 404)
        return task

    def labels(self, batch_id: str) -> list[StoredLabel]:
        """Every label of a batch, in the order they were stored."""
        with self._read() as db:
            rows = db.execute(
                "SELECT l.* FROM labels l JOIN tasks t ON t.task_id = l.task_id WHERE t.batch_id = ? "
                "ORDER BY l.label_id", (batch_id,)).fetchall()
        return [_label(row) for row in rows]

    def progress(self, batch_id: str) -> BatchProgress:
        """Counts for the app's progress bar and the labeling-complete sensor."""
        with self._read() as db:
            batch = db.execute("SELECT overlap FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if batch is None:
                raise LabelError(f"unknown batch {batch_id!r}: materialize a policy's human_eval_tasks first", 404)
            overlap = batch["overlap"]
            counts = [row["n"] for row in db.execute(
                "SELECT COUNT(l.label_id) AS n FROM tasks t LEFT JOIN labels l ON l.task_id = t.task_id "
                "WHERE t.batch_id = ? GROUP BY t.task_id", (batch_id,))]
        return BatchProgress(batch_id, len(counts), overlap, sum(counts), sum(min(n, overlap) for n in counts),
                             sum(n >= overlap for n in counts))

    def labelled_by(self, annotator: str, batch_id: str) -> int:
        with self._read() as db:
            return db.execute("SELECT COUNT(*) FROM labels l JOIN tasks t ON t.task_id = l.task_id "
                              "WHERE t.batch_id = ? AND l.annotator = ?", (batch_id, annotator)).fetchone()[0]


def _label(row: sqlite3.Row) -> StoredLabel:
    return StoredLabel(row["label_id"], row["task_id"], row["annotator"], Choice(row["choice"]), row["comment"],
                       row["rlhf_shown_as"], row["created_at"])
