"""What verify-on-read costs: SHA-256 throughput on one large file, and re-hashing every artifact of a tiny run.

Every local read (`ArtifactStore.local_path`), every reuse check and every skipped identical publish re-hashes
the artifact's files; this prints how long that takes beside the size, so the README's cost figures can be
re-measured. Run the main job first for the second figure (it reads var/artifacts).

    .venv/bin/python -m bench.artifact_verify [--mib 1024]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rlhf_assets.artifact_files import COMPLETE_MARKER, hash_file, verify_directory
from rlhf_assets.presets import PROJECT_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the single-file throughput test")
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "var" / "artifacts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.bin"
        with path.open("wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(1 << 20))
        started = time.perf_counter()
        hash_file(path)
        seconds = time.perf_counter() - started
    print(f"SHA-256 of one {args.mib} MiB file: {seconds:.2f} s ({args.mib / seconds:.0f} MiB/s)")
    markers = sorted(args.artifacts.glob(f"*/*/{COMPLETE_MARKER}"))
    if not markers:
        print(f"no artifacts under {args.artifacts}: run the main job for the whole-graph figure")
        return
    size = sum(p.stat().st_size for m in markers for p in m.parent.rglob("*") if p.is_file())
    started = time.perf_counter()
    for marker in markers:
        verify_directory(marker.parent, str(marker.parent))
    seconds = time.perf_counter() - started
    print(f"verifying all {len(markers)} artifacts under {args.artifacts} ({size / 2**20:.0f} MiB): {seconds:.2f} s")


if __name__ == "__main__":
    main()
