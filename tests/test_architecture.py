"""The package's structure, read from its source: no import cycles, no reaching into another
module's private names, no copies that bypass constructors, a projector free of astropy, and
every parameter declared once."""
import ast
from pathlib import Path

import pytest

import galcubecraft as gcc
from galcubecraft.parameters import Parameter

PACKAGE = Path(gcc.__file__).resolve().parent
#: Modules imported inside functions, on purpose: each pulls in matplotlib.pyplot, which the
#: package's import (and the CLI's other commands) should not pay for.
LAZY_ALLOWED = {"galcubecraft.visualise"}
#: Third-party packages that carry units: the projector's side of the package must not use them.
UNITS_PACKAGES = {"astropy", "spectral_cube", "radio_beam"}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "version.py"}


def resolve(module, node):
    """The absolute module(s) an import node imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.split(".")
    if node.level:
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    # `from . import functional` imports the module functional; the package itself is
    # already initialised (a parent package always is before its modules), so it is no edge
    submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return submodules if len(submodules) == len(node.names) else [target] + submodules


def imports(module):
    """``[(imported module, node, at module level?)]`` for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    top = {id(n) for n in tree.body}
    top |= {id(n) for stmt in tree.body if isinstance(stmt, ast.Try) for n in stmt.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in resolve(module, node):
                found.append((target, node, id(node) in top))
    return found


def graph():
    """module -> the package modules it imports (its own parent packages excluded: they are
    initialised before it)."""
    return {m: sorted({t for t, _, _ in imports(m)
                       if t in MODULES and t != m and not m.startswith(t + ".")})
            for m in MODULES}


def test_there_are_no_import_cycles():
    edges, state, cycles = graph(), {}, []

    def visit(m, path):
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_intra_package_imports_are_at_module_level():
    """Function-level imports are not used to dodge cycles (only to defer pyplot)."""
    late = [(m, t) for m in MODULES for t, _, top in imports(m)
            if t in MODULES and not top and t not in LAZY_ALLOWED
            and not t.endswith(".version")]
    assert not late, f"function-level imports of package modules: {late}"


def test_no_module_imports_another_modules_private_names():
    bad = []
    for m in MODULES:
        for target, node, _ in imports(m):
            if isinstance(node, ast.ImportFrom) and target.startswith("galcubecraft"):
                bad += [(m, target, a.name) for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, f"private names imported: {bad}"


def test_no_object_new_copies():
    """Values are made by their constructors (``replace``, ``from_wcs``...), never copied by
    ``object.__new__`` and ``__dict__.update``."""
    bad = [m for m, p in MODULES.items()
           if "object.__new__" in p.read_text() or "__dict__.update" in p.read_text()]
    assert not bad, bad


def closure(start):
    edges, seen, todo = graph(), set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += edges[m]
    return seen


#: module -> (layer, group).  A module imports only from lower layers, or from its own group
#: of its own layer.  The docs' Architecture page draws this table; a new module is placed here.
LAYERS = {
    **{m: (0, "foundations") for m in ("_about", "_files", "conventions", "units", "parameters",
                                       "pixelgrid", "functional", "resources")},
    **{m: (1, "physics") for m in ("distance", "lines", "response", "header", "rings")},
    **{m: (2, "models") for m in ("components", "components.base", "components.kinematics",
                                  "components.surface", "components.vertical", "components.flows",
                                  "galaxy",
                                  "diffuse", "priors")},
    **{m: (2, "instrument") for m in ("grid", "noise", "cube")},
    **{m: (2, "engine") for m in ("streams", "refine", "projector")},
    **{m: (3, "assembly") for m in ("render", "catalogue", "population", "visualise")},
    **{m: (4, "outputs") for m in ("observation", "inject", "dataset", "generator", "fitting")},
    **{m: (5, "front ends") for m in ("cli", "explorer")},
}


def test_every_module_imports_only_from_below_or_beside_it():
    place = {f"galcubecraft.{m}": v for m, v in LAYERS.items()}
    unplaced = sorted(set(MODULES) - set(place) - {"galcubecraft"})
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"
    upward = []
    for m, targets in graph().items():
        if m == "galcubecraft":
            continue
        for t in targets:
            (lm, gm), (lt, gt) = place[m], place[t]
            if lt > lm or (lt == lm and gt != gm):
                upward.append(f"{m} ({gm}) -> {t} ({gt})")
    assert not upward, upward


def test_the_projector_sees_no_units():
    """Neither the projector nor anything it imports imports astropy, spectral-cube or
    radio-beam: grids and galaxies hand it plain numbers."""
    reached = closure("galcubecraft.projector")
    assert "galcubecraft.grid" not in reached and "galcubecraft.units" not in reached
    using = {(m, t) for m in reached for t, _, _ in imports(m)
             if t.split(".")[0] in UNITS_PACKAGES}
    assert not using, using


def test_the_architecture_test_can_fail(tmp_path, monkeypatch):
    """The cycle finder finds a cycle (a test that cannot fail is a defect)."""
    monkeypatch.setitem(MODULES, "galcubecraft.fake_a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "galcubecraft.fake_b", tmp_path / "b.py")
    (tmp_path / "a.py").write_text("from . import fake_b\n")
    (tmp_path / "b.py").write_text("from .fake_a import x\n")
    with pytest.raises(AssertionError, match="import cycles"):
        test_there_are_no_import_cycles()


# --------------------------------------------------------------------------- declarations
def declared_classes():
    from galcubecraft.components import RotationCurve
    from galcubecraft.diffuse import Stream
    return [gcc.Galaxy, gcc.SersicDisk, gcc.ExponentialVertical, Stream,
            *RotationCurve.laws.values()]


@pytest.mark.parametrize("cls", declared_classes(), ids=lambda c: c.__name__)
def test_every_parameter_is_declared_with_a_description(cls):
    assert cls.param_names, cls
    for name, p in cls.declarations.items():
        assert isinstance(p, Parameter) and p.name == name
        assert p.description, f"{cls.__name__}.{name} has no description"


def test_flat_galaxy_parameter_names_are_unique_across_the_parts():
    from galcubecraft.components import RotationCurve
    owners = {}
    for cls in (gcc.Galaxy, gcc.SersicDisk, gcc.ExponentialVertical,
                *RotationCurve.laws.values()):
        for name in cls.declarations:
            if cls is not gcc.Galaxy and name in gcc.Galaxy.declarations:
                pytest.fail(f"{cls.__name__}.{name} shadows a Galaxy parameter")
            owners.setdefault(name, []).append(cls.__name__)
    shared = {n: o for n, o in owners.items() if len(o) > 1}
    assert not shared, shared


def test_a_new_parameter_reaches_the_command_line_and_the_truth_table(capsys):
    """Declaring a parameter is all it takes: the CLI flag, the flat dictionary and the
    truth-table column follow."""
    from galcubecraft.catalogue import PARAMETER_COLUMNS, TABLE_COLUMNS
    from galcubecraft.cli import main
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    help_text = capsys.readouterr().out
    for name, p in gcc.Galaxy.flat_parameters().items():
        if p.shape is None:
            assert p.flag in help_text, name
        if p.may_be_table:
            assert name in TABLE_COLUMNS and name not in PARAMETER_COLUMNS
        elif p.shape is None and name not in ("v_sys", "distance", "redshift"):
            assert name in PARAMETER_COLUMNS
