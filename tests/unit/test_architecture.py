"""The import rules of docs/architecture.md, checked on the source: a rule nobody checks is a wish."""

from pathlib import Path

import pytest

from rlhf_assets.code_versions import PACKAGE_DIR, imported_modules

pytestmark = pytest.mark.unit

ARCHITECTURE_PAGE = PACKAGE_DIR.parent / "docs" / "architecture.md"

# package -> packages of ours it must not import (docs/architecture.md, "Packages and which may import which")
FORBIDDEN = {
    "steps": {"assets", "checks", "automation", "definitions", "resources", "labeling", "cli"},
    "assets": {"steps"},
    "eval": {"assets", "steps", "compute", "ppo", "modeling", "labeling", "resources"},
    "data": {"assets", "steps", "compute", "ppo", "modeling", "eval", "labeling", "resources"},
    "modeling": {"assets", "steps", "compute", "ppo", "eval", "labeling", "resources"},
    "ppo": {"assets", "steps", "compute", "eval", "labeling", "resources"},
    "storage": {"assets", "steps", "compute", "resources"},
    "overrides": {"assets", "steps", "compute", "resources", "ppo", "modeling", "eval", "data", "labeling"},
    "layouts": {"assets", "steps", "compute", "resources", "ppo", "modeling", "eval", "data", "labeling", "presets"},
    "miniature": {"assets", "steps", "compute", "resources", "labeling", "checks", "automation", "definitions"},
}


def _files(package: str) -> list[Path]:
    root = PACKAGE_DIR / package
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_keep_to_their_side(package: str) -> None:
    broken = [f"{path.relative_to(PACKAGE_DIR)} imports {name}" for path in _files(package)
              for name in imported_modules(path)
              if name.split(".")[0] == "rlhf_assets" and len(name.split(".")) > 1
              and name.split(".")[1] in FORBIDDEN[package]]
    assert not broken, broken


def test_step_programs_never_import_dagster_only_pipes() -> None:
    """A step runs in a SageMaker container with its own small requirements, and by hand without Dagster."""
    broken = [f"{path.relative_to(PACKAGE_DIR)} imports {name}" for path in _files("steps")
              for name in imported_modules(path) if name.split(".")[0] in ("dagster", "dagster_aws")]
    assert not broken, broken


def test_the_architecture_page_names_every_package() -> None:
    page = ARCHITECTURE_PAGE.read_text()
    packages = {p.name if p.is_dir() else p.stem for p in PACKAGE_DIR.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    missing = {name for name in packages if f"`{name}/`" not in page and f"`{name}.py`" not in page}
    assert not missing, f"docs/architecture.md does not describe: {sorted(missing)}"
