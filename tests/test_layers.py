"""The layering of docs/architecture.md: every module of src/cml is placed in a layer, and no import (at the top
of a module, inside a function, or under TYPE_CHECKING) reaches a higher layer than its module's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

SOURCE = ROOT / "src"
TABLE_ROW = re.compile(r"^\| (\w+) \| ((?:`[\w.]+` ?)+) \|")


def layers() -> list[tuple[str, list[str]]]:
    """(layer, module entries), lowest first, from docs/architecture.md's table."""
    rows = []
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        match = TABLE_ROW.match(line)
        if match:
            rows.append((match.group(1), re.findall(r"`([\w.]+)`", match.group(2))))
    assert rows, "docs/architecture.md has no layer table"
    return rows


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SOURCE / "cml").rglob("*.py"))}


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> tuple[int, str] | None:
    """(position, layer) of the most specific entry that names ``module`` or a package holding it; ``cml.__init__``
    names the package's own module only."""
    best = None
    for position, (layer, entries) in enumerate(table):
        for entry in entries:
            own = entry.removesuffix(".__init__") if entry.endswith(".__init__") else None
            fits = module == own if own is not None else module == entry or module.startswith(entry + ".")
            if fits and (best is None or len(entry) > best[0]):
                best = (len(entry), (position, layer))
    return best and best[1]


def imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported cml module) of every import in the file, wherever it stands, once each."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "cml"]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "cml":
                continue
            for alias in node.names:  # `from . import plots` imports a module, `from .x import f` a name
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else target))
    return sorted(set(found))


def test_every_module_has_a_layer():
    table = layers()
    unplaced = [module for module in modules() if layer_of(module, table) is None]
    assert not unplaced, f"place these modules in docs/architecture.md's layer table: {unplaced}"


def test_no_module_imports_a_higher_layer():
    table = layers()
    found = modules()
    upward = []
    for module, path in found.items():
        position, layer = layer_of(module, table)
        for line, target in imports(module, path, set(found)):
            target_position, target_layer = layer_of(target, table)
            if target_position > position:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {module} ({layer}) imports {target} "
                              f"({target_layer})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """A function-level relative import is found, resolved and placed: the check cannot pass by missing one."""
    table = layers()
    path = tmp_path / "trainer.py"
    path.write_text("def f():\n    from ..experiment import Experiment\n    from .. import reports\n")
    found = imports("cml.training.trainer", path, set(modules()))
    assert found == [(2, "cml.experiment"), (3, "cml.reports")]
    assert [layer_of(target, table)[1] for _, target in found] == ["applications", "reports"]
    assert layer_of("cml.training.trainer", table)[1] == "training"
