"""The layering of docs/architecture.md, checked on every import statement of the product.

Every `import` and `from ... import` counts, at module level or inside a function or an
`if TYPE_CHECKING:` block: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "provisor"

# From the top down. A part may import the parts of lower layers only: never a part
# above it, never a peer of its own layer.
LAYERS: list[set[str]] = [
    {"cli", "api"},  # the faces
    {"services"},  # the use cases: the only door for the faces
    {"orchestrator"},
    {"fleet", "providers", "events", "backups"},
    {"store", "machines"},
    {"settings", "polling", "_asyncssh", "files", "logmask"},
    {"datadir"},  # where the data is: read by the settings and the warm path alike
    {"core"},  # pure: no I/O, imports nothing of provisor's but itself
]
FACES = {"cli", "api"}
FACES_MAY_IMPORT = {"services", "core"}
ROOT = "<root>"  # provisor/__init__.py: the version, importable by everyone
ENTRY = "__main__"  # `python -m provisor`: runs the CLI
TESTING = "testing"  # above everything; the product never imports it

_LAYER = {part: depth for depth, parts in enumerate(LAYERS) for part in parts}


def _part(module: list[str]) -> str:
    """`provisor.fleet.transport` -> `fleet`; `provisor` or `provisor.__version__` -> root."""
    if len(module) < 2 or module[1] == "__version__":
        return ROOT
    return module[1]


def _parse(path: Path) -> ast.Module:
    text = path.read_text()
    try:
        return ast.parse(text, str(path))
    except SystemError:  # CPython 3.11's spurious "recursion depth mismatch" (gh-106905)
        return ast.parse(text, str(path))


def _imports(path: Path, source: Path) -> list[tuple[int, list[str]]]:
    """(line, imported module as parts) of every provisor import in the file."""
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    package = parts[:-1]
    found = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package upwards
                base = package[: len(package) - node.level + 1]
                names = [base + (node.module.split(".") if node.module else [])]
            elif node.module == "provisor":  # `from provisor import cli, services`
                names = [["provisor", alias.name] for alias in node.names]
            else:
                names = [(node.module or "").split(".")]
        else:
            continue
        found += [(node.lineno, name) for name in names if name[0] == "provisor"]
    return found


def violations(source: Path = SOURCE) -> list[str]:
    """Every import that breaks the layering, as `file:line: what is wrong`."""
    problems = []
    for path in sorted(source.rglob("*.py")):
        importer = _part(["provisor", *path.relative_to(source).with_suffix("").parts])
        for line, module in _imports(path, source):
            imported = _part(module)
            where = f"{path.relative_to(source.parent)}:{line}: {'.'.join(module)}"
            if imported in (importer, ROOT) or importer in (TESTING, ENTRY):
                continue
            if imported == TESTING:
                problems.append(f"{where}: the product never imports the testing tools")
            elif importer in FACES and imported not in FACES_MAY_IMPORT:
                problems.append(f"{where}: {importer} may import only services and core")
            elif importer not in _LAYER or imported not in _LAYER:
                problems.append(f"{where}: not in a layer of tests/test_layers.py")
            elif _LAYER[imported] <= _LAYER[importer]:
                problems.append(f"{where}: {importer} may not import {imported} (not below it)")
    return problems


def test_the_product_keeps_its_layers() -> None:
    assert violations() == []


def test_every_part_of_the_product_has_a_layer() -> None:
    parts = {p.name.removesuffix(".py") for p in SOURCE.iterdir() if p.name != "__pycache__"}
    assert parts - {"__init__", "py.typed", ENTRY, TESTING} == set(_LAYER)


@pytest.mark.parametrize(
    ("file", "text", "complaint"),
    [
        ("cli/hosts.py", "from provisor.fleet import SSHPool\n", "cli may import only services"),
        ("api/jobs.py", "def f():\n    import provisor.store\n", "api may import only services"),
        ("core/names.py", "from provisor.settings import get_settings\n", "core may not import"),
        ("fleet/engine.py", "from provisor import providers\n", "fleet may not import providers"),
        ("store/db.py", "from ..services import hosts\n", "store may not import services"),
        ("providers/local.py", "import provisor.testing.crash\n", "never imports the testing"),
    ],
)
def test_a_violation_is_caught(tmp_path: Path, file: str, text: str, complaint: str) -> None:
    source = tmp_path / "provisor"
    (source / file).parent.mkdir(parents=True)
    (source / file).write_text(text)
    found = violations(source)
    assert len(found) == 1 and complaint in found[0] and found[0].startswith(f"provisor/{file}:")
