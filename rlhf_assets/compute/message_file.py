"""Reading a local step's Pipes messages from a file one whole line at a time.

Dagster's `PipesFileMessageReader` tails the message file with `readline()` and parses what it gets. A step appends
each message as one line, but a line of tens of KB (a report with inline plots) becomes visible to another process
page by page: a reader polling at that moment gets half a line, fails to parse it, and its thread stops, so every
later message (the output description, `closed`) is lost while the run carries on. This reader keeps an
unfinished line until its newline arrives, and after the step has exited reads what is left.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from threading import Event, Thread

from dagster import PipesFileMessageReader, PipesMessageHandler
from dagster_pipes import PipesDefaultMessageWriter, PipesParams

POLL_SECONDS = 0.01
MESSAGE_FILE = "messages"


def whole_lines(path: str, should_stop: Callable[[], bool]) -> Iterator[str]:
    """The file's lines as they are completed (each with its newline), until `should_stop` and nothing is left;
    a last line without a newline after the writer stopped is returned too (a step killed mid-write)."""
    pending = ""
    with open(path, encoding="utf-8") as stream:
        while True:
            chunk = stream.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    yield pending
                    pending = ""
                continue
            if should_stop():
                rest = pending + stream.read()
                if rest.strip():
                    yield from (line for line in rest.splitlines(keepends=True) if line.strip())
                return
            time.sleep(POLL_SECONDS)


class WholeLineMessageReader(PipesFileMessageReader):
    """`PipesFileMessageReader` in a private temporary file, parsing only complete lines."""

    def __init__(self) -> None:
        super().__init__(path="", include_stdio_in_messages=False)

    @contextmanager
    def read_messages(self, handler: PipesMessageHandler) -> Iterator[PipesParams]:
        with tempfile.TemporaryDirectory(prefix="rlhf-pipes-") as directory:
            self._path = os.path.join(directory, MESSAGE_FILE)
            closed = Event()
            open(self._path, "w", encoding="utf-8").close()
            thread = Thread(target=self._reader_thread, args=(handler, closed), daemon=True)
            thread.start()
            try:
                yield {PipesDefaultMessageWriter.FILE_PATH_KEY: self._path,
                       PipesDefaultMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: False}
            finally:
                closed.set()
                thread.join()

    def _reader_thread(self, handler: PipesMessageHandler, is_resource_complete: Event) -> None:
        try:
            for line in whole_lines(self._path, is_resource_complete.is_set):
                handler.handle_message(json.loads(line))
        except Exception:
            handler.report_pipes_framework_exception(f"{type(self).__name__} reader thread", sys.exc_info())
            raise

    def no_messages_debug_text(self) -> str:
        return f"Attempted to read messages from file {self._path}."
