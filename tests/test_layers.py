"""The package's imports follow the layer order documented in ``vild_d2/__init__.py``: a module
imports from its own layer or a lower one, never a higher one (no cycles that work by import
order, and the core never imports the kit)."""
import ast
import re
from pathlib import Path

import vild_d2

from .helpers import run

PACKAGE = Path(vild_d2.__file__).parent


def documented_layers():
    """{dotted module prefix: layer number} from the package docstring's numbered list."""
    layers = {}
    for number, entry in re.findall(r"^(\d+)\. (.+?)(?::|$)", vild_d2.__doc__, flags=re.M):
        for name in re.findall(r"``([\w.]+)``", entry):
            layers[name] = int(number)
    return layers


def layer_of(module: str, layers) -> int:
    """The layer of ``vild_d2.<module>``: its longest documented prefix."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in layers:
            return layers[".".join(parts[:n])]
    raise AssertionError(f"vild_d2.{module} is in no layer of vild_d2/__init__.py's docstring: add it there")


def imports_of(path: Path):
    """(line, imported module relative to vild_d2) of every import of the package in ``path``,
    function-level ones included."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(rel[:-1]) if rel[-1] != "__init__" else list(rel[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "vild_d2":
                target = node.module.split(".")[1:]
            else:
                continue
            names = [target + [a.name] for a in node.names] if not node.module else [target]
            for t in names:
                if t:
                    yield node.lineno, ".".join(t)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "vild_d2" and a.name != "vild_d2":
                    yield node.lineno, a.name.split(".", 1)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_import_follows_the_layer_order():
    layers = documented_layers()
    assert len(set(layers.values())) >= 10, layers
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = module_name(path)
        if not mod:  # vild_d2/__init__.py registers the components: it imports what it registers
            continue
        own = layer_of(mod, layers)
        for line, target in imports_of(path):
            if layer_of(target, layers) > own:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} (layer {own}) imports vild_d2.{target} "
                             f"(layer {layer_of(target, layers)})")
    assert not wrong, "imports against the layer order of vild_d2/__init__.py:\n" + "\n".join(wrong)


def test_the_check_can_fail():
    layers = documented_layers()
    assert layer_of("kit.toy.dataset", layers) > layer_of("data.mapper", layers)
    assert (layer_of("region_cache.builder", layers) > layer_of("data", layers)
            > layer_of("region_cache.storage", layers))
    src = PACKAGE / "data" / "mapper.py"
    assert any(layer_of(t, layers) < layer_of("data", layers) for _, t in imports_of(src))


def test_import_vild_d2_registers_no_toy_world():
    code = ("import sys, vild_d2; from detectron2.data import DatasetCatalog; "
            "print(sorted(m for m in sys.modules if m.startswith('vild_d2.kit')), "
            "[n for n in DatasetCatalog.list() if 'toy' in n])")
    out = run(["-c", code]).stdout
    assert out.strip() == "[] []"
