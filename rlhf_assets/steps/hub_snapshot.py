"""Step: stage one outside source (a hub repository at a revision, or a local stand-in) as a pinned snapshot.

The files are copied into the artifact with `snapshot.json`: repo id, type, the revision asked for, the commit it
resolved to and each file's SHA-256. Every other step reads the snapshot, so this is the one step that reaches
the hub (with `HF_HUB_OFFLINE=1` and a populated cache, such as the miniature mirror, it reads the cache). A local
file or directory is not copied: the asset that reads it hashes it in place.

Weights: a repository that ships safetensors is taken without its pickled copies; one that ships only
`pytorch_model.bin` or `*.pt` (GPT-J, gptj-rm-static) is taken as it is, and read with `weights_only=True`.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

from rlhf_assets.artifact_files import file_hashes
from rlhf_assets.data.hub_sources import FILES_DIR, SNAPSHOT_FILE, HubSource
from rlhf_assets.step_contracts.models import HubSnapshotReport, HubSnapshotRequest
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step

PICKLED_WEIGHTS = ("*.bin", "*.pt")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in patterns)


def _download(source: HubSource, patterns: tuple[str, ...]) -> tuple[Path, str]:
    """(snapshot folder, commit) of the hub repository at the source's revision, fetching `patterns` only."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(source.source, repo_type=source.repo_type, revision=source.revision,
                                        allow_patterns=list(patterns)))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise StepInputError(f"{source.repo_type} {source.source!r} at revision {source.revision!r} cannot be "
                             f"fetched for snapshot {source.role!r}: {exc}") from exc
    return folder, folder.name


def _copy_matching(folder: Path, out: Path, patterns: tuple[str, ...]) -> list[str]:
    copied = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and _matches(p.name, patterns)):
        relative = path.relative_to(folder)
        if relative.parts[0].startswith("."):
            continue
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path.resolve(), target)
        copied.append(str(relative))
    return copied


def stage(source: HubSource, out: Path) -> dict[str, object]:
    """Copy the source's files into `out`; the record that goes into `snapshot.json`."""
    if source.source is None or source.is_local:  # nothing outside: local files are read (and hashed) in place
        return {"role": source.role, "source": source.source, "local": source.is_local, "files": {}}
    safe_first = tuple(p for p in source.allow_patterns if p not in PICKLED_WEIGHTS)
    folder, commit = _download(source, safe_first)
    files = _copy_matching(folder, out / FILES_DIR, safe_first)
    if source.repo_type == "model" and not any(name.endswith(".safetensors") for name in files):
        folder, commit = _download(source, tuple(p for p in source.allow_patterns if p in PICKLED_WEIGHTS))
        files += _copy_matching(folder, out / FILES_DIR, PICKLED_WEIGHTS)
    if not files:
        raise StepInputError(f"snapshot {source.role!r}: {source.source} has no file matching "
                             f"{', '.join(source.allow_patterns)}")
    return {"role": source.role, "source": source.source, "repo_type": source.repo_type,
            "revision": source.revision, "commit": commit,
            "files": file_hashes(out / FILES_DIR)}


def main(runtime: StepRuntime) -> None:
    """Stage the configured source and report what was pinned."""
    source = runtime.request(HubSnapshotRequest).source
    if source.source is None or source.is_local:
        runtime.log(f"{source.role}: {source.source or 'not used by this preset'}; nothing to stage from the hub")
    else:
        runtime.log(f"staging {source.role}: {source.repo_type} {source.source} at {source.revision}")
    record = stage(source, runtime.model_dir)
    (runtime.model_dir / SNAPSHOT_FILE).write_text(json.dumps(record, indent=2))
    files: dict[str, str] = record["files"]  # type: ignore[assignment]
    size = sum((runtime.model_dir / FILES_DIR / name).stat().st_size for name in files)
    runtime.log(f"snapshot {source.role}: {len(files)} files, {size / 1e6:.1f} MB, commit {record.get('commit')}")
    runtime.report(HubSnapshotReport(role=source.role, source=source.source or "(unused)",
                                     commit=str(record.get("commit")), file_count=len(files), size_bytes=size))


if __name__ == "__main__":
    run_step(main)
