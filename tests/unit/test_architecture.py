"""The import rules of docs/architecture.md, checked on the source: a rule nobody checks is a wish."""

import ast
import re
from pathlib import Path

import pytest

from rlhf_assets.code_versions import PACKAGE_DIR, imported_modules

pytestmark = pytest.mark.unit

ARCHITECTURE_PAGE = PACKAGE_DIR.parent / "docs" / "architecture.md"


def _allowed() -> dict[str, set[str]]:
    """docs/architecture.md's "Packages and which may import which" table: package -> the packages (or single
    modules, `ppo.config`) of ours it may import; "nothing of ours" is the empty set."""
    page = ARCHITECTURE_PAGE.read_text()
    table = page[page.index("| package | job | may import |"):].split("\n\n", 1)[0].splitlines()[2:]
    rules = {}
    for row in table:
        package, _, may_import = (cell.strip() for cell in row.strip("|").rsplit("|", 2))
        name = package.strip("`").removesuffix(".py").removesuffix("/")
        rules[name] = set(re.findall(r"`([\w.]+)`", may_import))
    return rules


ALLOWED = _allowed()


def _files(package: str) -> list[Path]:
    root = PACKAGE_DIR / package
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def test_the_table_names_every_package_and_nothing_else() -> None:
    packages = {p.name if p.is_dir() else p.stem for p in PACKAGE_DIR.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert set(ALLOWED) == packages, (f"not in the table: {sorted(packages - set(ALLOWED))}; "
                                      f"in the table but not a package: {sorted(set(ALLOWED) - packages)}")
    unknown = {name for names in ALLOWED.values() for name in names if name.split(".")[0] not in packages}
    assert not unknown, f"the table allows imports of what is not a package: {sorted(unknown)}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_table_allows(package: str) -> None:
    broken = []
    for path in _files(package):
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] != "rlhf_assets" or len(parts) < 2 or parts[1] == package:
                continue
            if parts[1] not in ALLOWED[package] and ".".join(parts[1:3]) not in ALLOWED[package]:
                broken.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not broken, f"not allowed by docs/architecture.md: {broken}"


def test_step_programs_never_import_dagster_only_pipes() -> None:
    """A step runs in a SageMaker container with its own small requirements, and by hand without Dagster."""
    broken = [f"{path.relative_to(PACKAGE_DIR)} imports {name}" for path in _files("steps")
              for name in imported_modules(path) if name.split(".")[0] in ("dagster", "dagster_aws")]
    assert not broken, broken


def _is_environment_read(node: ast.AST) -> bool:
    """`os.environ[...]`, `os.environ.get(...)` or `os.getenv(...)`: a value taken from the environment (passing the
    mapping itself along, as a default argument, reads nothing yet)."""
    def environ(n: ast.AST) -> bool:
        return isinstance(n, ast.Attribute) and n.attr == "environ"

    if isinstance(node, ast.Subscript):
        return environ(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "getenv" or (environ(node.func.value) and node.func.attr in ("get", "copy", "items"))
    return False


def _reads_environment_on_import(tree: ast.AST) -> list[int]:
    """Lines that read the environment outside any function body (so, when the module is imported)."""
    lines = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if not in_function and _is_environment_read(node):
            lines.append(node.lineno)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # decorators and default values run on import; only the body waits for a call
            body = node.body if isinstance(node.body, list) else [node.body]
            for child in ast.iter_child_nodes(node):
                visit(child, in_function or child in body)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    return lines


def test_no_module_reads_the_environment_when_imported() -> None:
    """Settings are read when the code location loads (`settings.py`, `definitions.defs`) or a resource or step
    starts, never on import: importing a module for a test, a step or the CLI must not depend on the environment."""
    found = [f"{path.relative_to(PACKAGE_DIR)}:{line}" for path in sorted(PACKAGE_DIR.rglob("*.py"))
             for line in _reads_environment_on_import(ast.parse(path.read_text()))]
    assert not found, found
    planted = ast.parse("import os\nBLOCKING = os.environ.get('X', '1') != '0'\ndef f():\n    return os.environ\n"
                        "@decorate(os.environ['Y'])\ndef g(z=os.getenv('Z')):\n    return os.environ\n")
    assert sorted(_reads_environment_on_import(planted)) == [2, 5, 6], "the import-time reads, and only those"


def _domain_rules() -> dict[str, set[str]]:
    """docs/architecture.md's "Domains and which may import which" table: domain (a package under `defs/`) -> the
    other modules of `defs/` it may import (`data`, `common`, ...)."""
    page = ARCHITECTURE_PAGE.read_text()
    table = page[page.index("| domain | holds | may import |"):].split("\n\n", 1)[0].splitlines()[2:]
    rules = {}
    for row in table:
        domain, _, may_import = (cell.strip() for cell in row.strip("|").rsplit("|", 2))
        rules[domain.strip("`").removesuffix("/")] = set(re.findall(r"`([\w.]+)`", may_import))
    return rules


def test_each_domain_imports_only_the_domains_the_table_allows() -> None:
    """The Dagster side is laid out by domain (data, models, evaluation, human evaluation, comparison); a domain
    reaching into a later one (data importing evaluation, say) would bring back the loops over everything."""
    rules = _domain_rules()
    defs = PACKAGE_DIR / "defs"
    domains = {p.name for p in defs.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(rules) == domains, f"domains: {sorted(domains)}; the table: {sorted(rules)}"
    broken = []
    for domain in sorted(domains):
        for path in sorted((defs / domain).rglob("*.py")):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[:2] == ["rlhf_assets", "defs"] and len(parts) > 2 and parts[2] != domain \
                        and parts[2] not in rules[domain]:
                    broken.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not broken, f"not allowed by docs/architecture.md's domain table: {broken}"
