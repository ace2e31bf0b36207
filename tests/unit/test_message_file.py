"""A local step's Pipes messages are parsed only as whole lines: a long report seen half-written by the reader
is kept until its newline arrives, not parsed (which stopped Dagster's reader and lost every later message)."""

import json
import threading
import time
from pathlib import Path

import pytest

from rlhf_assets.compute.message_file import whole_lines

pytestmark = pytest.mark.unit


def test_a_line_seen_half_written_is_read_whole_once_it_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    report = json.dumps({"method": "report_asset_materialization", "params": {"plot": "x" * 60_000}}) + "\n"
    described = json.dumps({"method": "report_custom_message", "params": {"payload": {"hash": "abc"}}}) + "\n"
    path.write_text("")
    stop = threading.Event()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(whole_lines(str(path), stop.is_set)))
    reader.start()
    with path.open("a", encoding="utf-8") as stream:
        stream.write(report[:30_000])  # what a reader can see of a line the kernel has made visible in part
        stream.flush()
        time.sleep(0.1)
        assert lines == [], "nothing is handed on before the newline"
        stream.write(report[30_000:] + described[:10])
        stream.flush()
        time.sleep(0.1)
        stream.write(described[10:])
    stop.set()
    reader.join(timeout=10)
    assert [json.loads(line)["method"] for line in lines] == ["report_asset_materialization", "report_custom_message"]


def test_a_last_line_cut_by_a_killed_step_is_still_returned_after_the_stop(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text('{"method": "log"}\n{"method": "clo')
    assert list(whole_lines(str(path), lambda: True)) == ['{"method": "log"}\n', '{"method": "clo']
