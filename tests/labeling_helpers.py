"""Test helpers for the labeling app: tasks from a small responses table, and the real app in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import requests

from rlhf_assets.labeling.store import LabelStore
from rlhf_assets.labeling.tasks import PairwiseTask, batch_id, build_tasks

XSS_RESPONSE = ('<script>window.__pwned = "script";</script><img src=x onerror="window.__pwned = \'img\'">'
                "& a <b>bold</b> claim")


def responses_table(count: int, *, hostile_first: bool = False) -> pd.DataFrame:
    """Eval-responses rows like `eval_responses` writes; the first RLHF response can carry markup payloads."""
    rows = [{"prompt_id": i, "prompt": f"\n\nHuman: question {i}?\n\nAssistant:",
             "sft_response": f"sft answer {i}", "rlhf_response": f"rlhf answer {i}"} for i in range(count)]
    if hostile_first:
        rows[0]["rlhf_response"] = XSS_RESPONSE
        rows[0]["prompt"] = "\n\nHuman: <script>window.__pwned = 'prompt';</script> hi\n\nAssistant:"
    return pd.DataFrame(rows)


def queue_tasks(store: LabelStore, count: int, overlap: int = 1, **kwargs: bool) -> list[PairwiseTask]:
    """Build tasks like `human_eval_tasks` does and register them as the active batch."""
    tasks = build_tasks(responses_table(count, **kwargs), seed=0)
    store.register_batch(tasks, batch_id(tasks), overlap, source="test")
    return tasks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def labeling_server(db: Path) -> Iterator[str]:
    """`rlhf-assets label` as users start it, on a free 127.0.0.1 port; yields its base URL."""
    port = free_port()
    log = (db.parent / f"server-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf_assets.cli", "--db", str(db), "label", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"labeling server did not start: {(db.parent / log.name).read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
