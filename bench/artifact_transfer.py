"""Publishing and adopting a multi-GB artifact on S3 without it passing through the Dagster process's memory.

Against a moto server in its own process (so its memory is not ours), on one artifact of `--gigabytes` GB
(two equal files, like a sharded checkpoint), each in this process, with its resident memory sampled every 10 ms:
- **whole-file upload** (what publishing did before: `write_bytes(read_bytes())` per file), for comparison;
- **streamed publish**: `ArtifactStore.publish_output` from a local directory (s3fs multipart uploads);
- **adopt**: `ArtifactStore.publish_output` from the S3 prefix a SageMaker job uploaded uncompressed
  (server-side copy; nothing is read here).
The content hash is the step's work (done in the job) and is timed on its own. Prints peak RSS growth above the
baseline and throughput, and the ratios against the whole-file upload.

    .venv/bin/python bench/artifact_transfer.py --gigabytes 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import psutil
import s3fs

from rlhf_assets.artifact_files import OutputDescription, describe_directory
from rlhf_assets.storage import ArtifactStore

BUCKET = "bench"
BLOCK = 64 << 20


def measure(work: Callable[[], object]) -> tuple[float, int]:
    """(seconds, peak RSS growth in bytes) of `work` in this process."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak, done = baseline, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return seconds, max(0, peak - baseline)


def make_artifact(directory: Path, total: int) -> None:
    directory.mkdir(parents=True)
    block = os.urandom(BLOCK)
    for index in range(2):
        with (directory / f"model-{index:05d}-of-00002.safetensors").open("wb") as handle:
            for _ in range(total // 2 // BLOCK):
                handle.write(block)


def start_moto(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="artifact size in GiB")
    args = parser.parse_args()
    total = int(args.gigabytes * (1 << 30)) // (2 * BLOCK) * 2 * BLOCK
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    server = start_moto(port)
    scratch = Path(tempfile.mkdtemp(prefix="artifact-transfer-"))
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3fs.S3FileSystem.clear_instance_cache()
        artifact = scratch / "model"
        make_artifact(artifact, total)
        print(f"artifact: 2 files, {total / (1 << 30):.2f} GiB")
        hash_seconds, hash_rss = measure(lambda: describe_directory(artifact))
        description: OutputDescription = describe_directory(artifact)
        store = ArtifactStore(f"s3://{BUCKET}/artifacts")

        def whole_files() -> None:
            fs = store.root.fs
            for name in description.files:
                with fs.open(f"s3://{BUCKET}/whole/{name}", "wb") as handle:
                    handle.write((artifact / name).read_bytes())

        rows = {
            "hash (in the job)": (hash_seconds, hash_rss),
            "whole-file upload (before)": measure(whole_files),
            "streamed publish": measure(lambda: store.publish_output(str(artifact), "streamed", description)),
        }
        job_output = f"s3://{BUCKET}/sagemaker/output/job/output/model"
        for name in description.files:  # what SageMaker uploads from /opt/ml/model (not this process's work)
            s3.upload_file(str(artifact / name), BUCKET, f"sagemaker/output/job/output/model/{name}")
        rows["adopt (server-side copy)"] = measure(lambda: store.publish_output(job_output, "adopted", description))
        before_rss = rows["whole-file upload (before)"][1]
        print(f"{'operation':<28}{'seconds':>9}{'MB/s':>9}{'peak RSS growth MB':>20}{'RSS vs before':>15}")
        for label, (seconds, rss) in rows.items():
            print(f"{label:<28}{seconds:>9.1f}{total / 1e6 / seconds:>9.0f}{rss / 1e6:>20.0f}"
                  f"{rss / before_rss:>15.3f}")
    finally:
        server.terminate()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
