"""What "a step reads what was verified" costs per input, side by side on one published artifact.

A local step used to read its inputs through a symlink into the store, verified once by the Dagster process
seconds to minutes earlier. Now the local backend gives the step a private copy (`compute/container.py:
stage_channel`: hard links where the store shares the disk, copies where it does not) and the step re-hashes that
copy before first use (`StepRuntime.channel`). Three ways to get a channel ready, each on the same artifact of
`--mib` MiB in two files (like a sharded checkpoint), cold and warm page cache alike:

- **link**: a symlink to the store (before; nothing verified where it is read);
- **stage + verify (hard links)**: private hard links, then the full re-hash;
- **stage + verify (copies)**: what a store on another disk costs.

Before, the Dagster process re-hashed a local input before the launch; now only the step does (on its copy), so
the total per input is one re-hash either way. Prints seconds and the ratio of each to the re-hash alone, which
dominates: the staging itself is metadata for hard links.

    .venv/bin/python -m bench.input_staging [--mib 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rlhf_assets.artifact_files import verify_directory
from rlhf_assets.compute.container import stage_channel
from rlhf_assets.storage import ArtifactStore


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the artifact, in two equal files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        output = root / "output"
        output.mkdir()
        for shard in range(2):
            with (output / f"model-{shard}.safetensors").open("wb") as handle:
                for _ in range(args.mib // 2):
                    handle.write(os.urandom(1 << 20))
        store = ArtifactStore(str(root / "store"))
        uri, content_hash, _ = store.publish_directory(output, "ppo_policy")
        published = Path(store.resolve(uri))
        def staged(target: Path, hard_links: bool) -> None:
            stage_channel(published, target / "data", hard_links=hard_links)
            verify_directory(target / "data", uri, content_hash)

        runs = {
            "link (before: nothing verified where read)":
                lambda target: (target / "data").symlink_to(published, target_is_directory=True),
            "stage + verify, hard links": lambda target: staged(target, hard_links=True),
            "stage + verify, copies (other disk)": lambda target: staged(target, hard_links=False),
        }
        rehash = _timed(lambda: verify_directory(published, uri, content_hash))
        print(f"artifact: {args.mib} MiB in 2 files; re-hash alone {rehash:.2f} s ({args.mib / rehash:.0f} MiB/s)")
        for name, run in runs.items():
            target = root / "channel"
            target.mkdir()
            seconds = _timed(lambda run=run, target=target: run(target))
            shutil.rmtree(target)
            print(f"{name:45s} {seconds:7.2f} s  {seconds / rehash:5.2f} x the re-hash")


if __name__ == "__main__":
    main()
