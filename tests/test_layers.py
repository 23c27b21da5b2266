"""The layers stay one-way: a module imports only from modules below it (README's code map)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ijr_cli"
LAYERS = [
    {"errors", "config", "metric_names"},
    {"data", "models", "lanczos", "impurity"},
    {"objectives", "optim"},
    {"ejr"},
    {"train", "curvature"},
    {"jacobians"},
    {"measure"},
    {"records"},
    {"experiment", "sweeps", "sweep_state"},
    {"collect"},
    {"tables", "figures"},
    {"report_page"},
    {"cli"},
    {"sweep_cli", "report_cli"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _ijr_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ijr_cli."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.ImportFrom) and node.module == "ijr_cli":
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names if a.name.startswith("ijr_cli."))


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert modules == set(LEVEL), "add new modules to LAYERS (and the README's code map)"


@pytest.mark.parametrize("module", sorted(LEVEL))
def test_imports_go_down_only(module):
    for imported in _ijr_imports(PACKAGE / f"{module}.py"):
        assert imported in LEVEL, f"{module} imports unknown ijr_cli.{imported}"
        if LEVEL[module] == 0 and imported in LAYERS[0]:
            continue  # config imports errors
        assert LEVEL[imported] < LEVEL[module], f"{module} (layer {LEVEL[module]}) imports {imported} (layer {LEVEL[imported]})"


def test_records_and_config_do_not_import_torch():
    for module in ("records", "config", "errors", "metric_names", "collect", "tables", "figures", "report_page",
                   "report_cli"):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "torch" not in names, module
