"""Code versions that change exactly when the code an asset runs changes.

An asset's code is the module that computes it (a step program, or the asset module itself for assets computed in
the Dagster process) and every module of this package that module imports, directly or not, found by reading the
`import` statements (no import is executed), plus the data files those packages ship (accelerate configs, HTML
templates, the annotator guidelines). The fingerprint of those files is the asset's Dagster `code_version`, so
the UI marks an asset stale when its code changes, and it keys result reuse, so editing `cli.py` re-runs nothing
while editing `ppo/losses.py` re-runs PPO and what depends on it. The presets' values (`presets.py`) are left out
(`VALUES_MODULES`); their schemas (`specs.py`) are not.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "rlhf_assets"
PACKAGE_DIR = Path(__file__).resolve().parent
VERSION_LENGTH = 16
# The presets' values are a run's configuration, not code: a step gets the values it uses in its request (which
# result reuse hashes), and an asset computed in the Dagster process records its resolved config in its manifest.
# Their schemas (`specs.py`) are code and count. So editing a `gptj_6b` number re-versions nothing on `tiny`.
VALUES_MODULES = frozenset({f"{PACKAGE}.presets"})


def _module_file(module: str, package_dir: Path) -> Path | None:
    """The file of `rlhf_assets.x.y` (module or package), or None when it is not one of ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (including inside functions), with `from a import b`
    also counted as module `a.b` in case `b` is a submodule. Read from the source, nothing is imported."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@functools.cache
def _package_imports(path: Path) -> frozenset[str]:
    """Parsed once per process: every asset's closure walks the same shared modules."""
    return frozenset(name for name in imported_modules(path) if name.split(".")[0] == PACKAGE)


def _parents(module: str) -> list[str]:
    """`a.b.c` → `a`, `a.b`: importing a module runs its packages' `__init__` first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_closure(module: str, package_dir: Path = PACKAGE_DIR) -> set[Path]:
    """The source files `module` runs when imported: itself, its packages, and everything they import."""
    seen: set[str] = set()
    files: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen or name in VALUES_MODULES:
            continue
        seen.add(name)
        path = _module_file(name, package_dir)
        if path is None:
            continue
        files.add(path)
        pending += _parents(name) + sorted(_package_imports(path))
    return files


def _data_files(package: Path) -> list[Path]:
    """Files a package ships beside its modules: non-Python files, and everything in folders that are not
    packages (compute/accelerate/*.yaml, labeling/templates, labeling/static)."""
    found = [p for p in package.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")]
    for folder in (p for p in package.iterdir() if p.is_dir() and not (p / "__init__.py").exists()):
        if folder.name != "__pycache__":
            found += [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return found


def code_fingerprint(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the files `module` runs and the data files of their packages, named relative to the package."""
    files = module_closure(module, package_dir)
    files |= {data for path in list(files) for data in _data_files(path.parent)}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(package_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def code_version(module: str) -> str:
    """The Dagster `code_version` of an asset computed by `module` (a step program or an asset module)."""
    return code_fingerprint(module)[:VERSION_LENGTH]


def step_code_version(step: str) -> str:
    """The code version of an asset computed by the step program `rlhf_assets.steps.<step>`."""
    return code_version(f"{PACKAGE}.steps.{step}")
