"""`rlhf-assets`: the command line for the people around the pipeline (annotators' coordinator, operators).

    rlhf-assets label --port 8080            serve the labeling app on the queued <policy>/human_eval_tasks batches
    rlhf-assets annotators add NAME          create an annotator; prints their sign-in token once
    rlhf-assets annotators reset-token NAME  replace a lost or leaked token
    rlhf-assets annotators list
    rlhf-assets progress                     labels so far in each policy's queued batch
    rlhf-assets artifact ASSET               the latest recorded manifest of ASSET and its verified directory
    rlhf-assets workers [stop]               the warm step workers of this user (compute/warm), or stop them
    rlhf-assets mirror [DIR] [--print-env]   build the local hub mirror for miniature runs (rlhf_assets.miniature)

The labeling commands use the labeling database of the Dagster code location (`RLHF_LABELING_DB`, default
`var/labeling/labels.sqlite`), or `--db PATH`; `artifact` reads the instance at `DAGSTER_HOME` and the store at
`RLHF_ARTIFACT_ROOT`, as the code location does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from pydantic import ValidationError

from rlhf_assets.artifact_files import ArtifactIntegrityError
from rlhf_assets.compute.warm.protocol import running_workers, stop_workers, worker_directory
from rlhf_assets.labeling.app import BODY_TIMEOUT_SECONDS, HEADER_TIMEOUT_SECONDS, MAX_BODY_BYTES, serve
from rlhf_assets.labeling.store import LabelError, LabelPacing, LabelStore
from rlhf_assets.presets import PROJECT_ROOT, SHARED_HH_PATH, SHARED_RTP_DIR
from rlhf_assets.resources import ManifestRecordError, default_labeling_db, latest_artifact
from rlhf_assets.storage import ArtifactLocationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-assets", description="rlhf-assets human-evaluation tools")
    parser.add_argument("--db", default=None, help="labeling database (default: RLHF_LABELING_DB or var/labeling)")
    commands = parser.add_subparsers(dest="command", required=True)
    label = commands.add_parser("label", help="serve the labeling web app")
    label.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a team network)")
    label.add_argument("--port", type=int, default=8080)
    label.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                       help="largest JSON body the API accepts (413 above it)")
    label.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS (needs --tls-key)")
    label.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    label.add_argument("--forwarded-allow-ips", help="behind a load balancer that ends TLS: its addresses (comma-"
                       "separated, or '*' inside a private network), whose X-Forwarded-Proto/-For are trusted")
    label.add_argument("--max-leases-per-annotator", type=int,
                       default=int(os.environ.get("RLHF_LABELING_MAX_LEASES", "1")),
                       help="tasks one annotator may hold at once (default 1, or RLHF_LABELING_MAX_LEASES)")
    label.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_SECONDS,
                       help="seconds a client has to send a request's head (slow clients are cut off)")
    label.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_SECONDS,
                       help="seconds a client has to send a request's body (408 after)")
    label.add_argument("--min-seconds-per-pair", type=float,
                       default=float(os.environ.get("RLHF_LABELING_MIN_SECONDS", "3")),
                       help="a label or skip counts only this long after the pair was shown (default 3, or "
                       "RLHF_LABELING_MIN_SECONDS)")
    label.add_argument("--max-labels-per-annotator", type=int,
                       default=int(os.environ["RLHF_LABELING_MAX_LABELS"]) if os.environ.get(
                           "RLHF_LABELING_MAX_LABELS") else None,
                       help="labels one annotator may give per batch (default: no cap, or RLHF_LABELING_MAX_LABELS)")
    annotators = commands.add_parser("annotators", help="manage annotators and their tokens")
    actions = annotators.add_subparsers(dest="action", required=True)
    for action in ("add", "reset-token"):
        actions.add_parser(action).add_argument("name")
    actions.add_parser("list")
    commands.add_parser("progress", help="labels so far in each policy's queued batch")
    artifact = commands.add_parser("artifact", help="an asset's latest recorded manifest and verified directory")
    artifact.add_argument("asset", help="asset key, e.g. ppo_policy")
    workers = commands.add_parser("workers", help="the warm step workers (they stop by themselves when idle)")
    workers.add_argument("action", nargs="?", choices=("list", "stop"), default="list")
    mirror = commands.add_parser("mirror", help="build the local hub mirror every preset runs against in miniature")
    mirror.add_argument("directory", nargs="?", type=Path, default=PROJECT_ROOT / "var" / "hub-mirror")
    mirror.add_argument("--print-env", action="store_true", help="print the mirror's environment as shell exports")
    mirror.add_argument("--real-dimensions", action="store_true",
                        help="EleutherAI/pythia-160m at its real shape (random weights), for the GPU check")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rlhf-assets` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "artifact":
        return _show_artifact(args.asset)
    if args.command == "workers":
        return _workers(args.action)
    if args.command == "mirror":
        return _mirror(args.directory, args.print_env, args.real_dimensions)
    leases = getattr(args, "max_leases_per_annotator", 1)
    if leases < 1:
        print("error: --max-leases-per-annotator must be at least 1", file=sys.stderr)
        return 2
    try:
        pacing = LabelPacing(min_seconds_per_pair=getattr(args, "min_seconds_per_pair", 0.0),
                             max_labels_per_annotator=getattr(args, "max_labels_per_annotator", None))
    except ValidationError as error:
        print(f"error: {error.errors()[0]['loc'][0]}: {error.errors()[0]['msg']}", file=sys.stderr)
        return 2
    store = LabelStore(Path(args.db or default_labeling_db()), max_leases_per_annotator=leases, pacing=pacing)
    try:
        if args.command == "label":
            if (args.tls_cert is None) != (args.tls_key is None):
                print("error: --tls-cert and --tls-key go together", file=sys.stderr)
                return 2
            tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
            batches = ", ".join(store.active_batches()) or \
                "none (materialize a policy's human_eval_tasks, e.g. ppo_policy/human_eval_tasks)"
            print(f"labeling database {store.path}; queued batches (served oldest first): {batches}")
            scheme = "https" if tls else "http"
            print(f"annotators sign in at {scheme}://{args.host}:{args.port}/login#token=<their token>")
            serve(store, args.host, args.port, args.max_body_bytes, tls, args.forwarded_allow_ips,
                  (args.header_timeout, args.body_timeout))
        elif args.command == "annotators" and args.action == "list":
            print("\n".join(store.annotators()) or "no annotators yet")
        elif args.command == "annotators":
            token = store.add_annotator(args.name) if args.action == "add" else store.reset_token(args.name)
            print(f"token for {args.name} (shown once; share it privately): {token}")
            print(f"sign-in link: http://<host>:<port>/login#token={token}")
        else:
            batches = store.active_batches()
            if not batches:
                print("no batch queued: materialize a policy's human_eval_tasks (e.g. ppo_policy/human_eval_tasks)")
                return 1
            for batch in batches:
                progress = store.progress(batch)
                print(f"{store.stream_of(batch)}: batch {batch}: {progress.counted_labels}/{progress.required_labels} "
                      f"labels, {progress.complete_tasks}/{progress.tasks} tasks complete")
    except LabelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _mirror(directory: Path, print_env: bool, real_dimensions: bool) -> int:
    """Build the mirror from the shared HH and RTP data (kept when already built); optionally print its exports."""
    from rlhf_assets.miniature.mirror import build_hub_mirror, mirror_environment

    if not SHARED_HH_PATH.exists() or not SHARED_RTP_DIR.is_dir():
        print(f"error: the mirror is built from {SHARED_HH_PATH} and {SHARED_RTP_DIR}, which are missing",
              file=sys.stderr)
        return 1
    record = build_hub_mirror(directory.resolve(), hh_source=SHARED_HH_PATH, rtp_dir=SHARED_RTP_DIR,
                              log=lambda line: print(line, file=sys.stderr), real_dimensions=real_dimensions)
    if print_env:
        for name, value in mirror_environment(directory.resolve()).items():
            print(f"export {name}={shlex.quote(value)}")
    else:
        print(json.dumps(record, indent=2))
    return 0


def _workers(action: str) -> int:
    """List or stop the warm step workers: after upgrading a library by hand, or to free their memory now."""
    directory = worker_directory()
    if action == "stop":
        stopped = stop_workers(directory)
        print(f"stopped {len(stopped)} worker(s)" + (f": {', '.join(map(str, stopped))}" if stopped else ""))
        return 0
    workers = running_workers(directory)
    for pid, socket_path in workers.items():
        print(f"pid {pid}  socket {socket_path}")
    if not workers:
        print(f"no warm worker running (in {directory})")
    return 0


def _show_artifact(asset: str) -> int:
    """Print what downstream steps would read for `asset`: its recorded manifest, then its checked directory."""
    try:
        manifest, directory = latest_artifact(asset)
    except (ManifestRecordError, ArtifactIntegrityError, ArtifactLocationError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(manifest.model_dump_json(indent=2))
    print(f"verified directory: {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
