"""The import rules of docs/architecture.md, checked on the source: every module under dsunlearn/ is parsed with
`ast` (nothing is imported), every import statement is resolved to a module name, inside functions too.

A new module or package must be placed on the map (`COMPONENTS` here and the table of docs/architecture.md).
Imports under `if TYPE_CHECKING:` (annotations only, never executed) do not count. `ALLOWED_VIOLATIONS` lists
the imports that break a rule today; a new violation fails, and so does an entry that no longer occurs (remove it
when the restructuring fixes it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "dsunlearn"

# component -> module prefixes (a module belongs to the component of its longest matching prefix; the package
# root "dsunlearn" matches only itself)
COMPONENTS: dict[str, tuple[str, ...]] = {
    "cli": ("dsunlearn.cli", "dsunlearn.__main__", "dsunlearn.commands"),
    # unlearn_losses: the unlearn recipe's loss closures, at the top level today
    "recipes": ("dsunlearn.recipes", "dsunlearn.unlearn_losses"),
    "suites": ("dsunlearn.suites",),
    "eval": ("dsunlearn.eval",),
    "geometry": ("dsunlearn.geometry",),
    "uipe": ("dsunlearn.uipe",),
    "engine": ("dsunlearn.engine",),
    "objectives": ("dsunlearn.objectives",),
    "models": ("dsunlearn.models",),
    "data": ("dsunlearn.data",),
    # objective_catalog: the registry's names and hyper-parameters for the config, read without torch
    # objective_names: open-unlearning's method names as aliases of objective.name
    # batch_size: micro x world x accum = global, torch-free (the run dir's early checks ask it)
    "config": (
        "dsunlearn.config",
        "dsunlearn.config_io",
        "dsunlearn.config_bounds",
        "dsunlearn.objective_catalog",
        "dsunlearn.objective_names",
        "dsunlearn.batch_size",
    ),
    # run_layout: RunDir, the one owner of a run directory's layout (issue 13 item 3)
    "rundir": (
        "dsunlearn.rundir",
        "dsunlearn.run_layout",
        "dsunlearn.runlock",
        "dsunlearn.path_guard",
        "dsunlearn.manifest",
    ),
    "tracking": ("dsunlearn.tracking", "dsunlearn.report", "dsunlearn.plots"),
    "leaf": (
        "dsunlearn",
        "dsunlearn.errors",
        "dsunlearn.fsutil",
        "dsunlearn.dist",
        "dsunlearn.safetensors_writer",
        "dsunlearn.hyperparams",
    ),
}

EVERYTHING = frozenset(COMPONENTS)
# component -> the components it may import besides itself and "leaf" (docs/architecture.md)
MAY_IMPORT: dict[str, frozenset[str]] = {
    "cli": EVERYTHING,
    "recipes": EVERYTHING - {"cli"},
    "suites": frozenset({"eval", "data", "models", "engine", "config", "rundir"}),
    "eval": frozenset({"data", "models", "objectives", "engine", "config"}),
    "geometry": frozenset({"engine", "objectives", "config"}),
    "uipe": frozenset({"engine", "models", "config", "rundir"}),
    "engine": frozenset({"models", "data", "objectives", "config", "rundir"}),
    "models": frozenset({"config"}),
    "data": frozenset({"config"}),
    "rundir": frozenset({"config"}),
    "tracking": frozenset({"config", "rundir"}),
    "config": frozenset({"objectives"}),  # the registry: objective names, hyper-parameters from the signatures
    "objectives": frozenset(),  # and of the leaves only dsunlearn.errors (OBJECTIVES_MAY_IMPORT)
    "leaf": frozenset(),
}
# Small owners of one thing that every component may import; they import only the leaves, the run-dir modules
# (checksums) and the config schema themselves.
SHARED: dict[str, str] = {
    "dsunlearn.suites": "the suite registry: names and get_suite (the config validates data.suite against it)",
    "dsunlearn.engine.partitioning": "how ZeRO-3 marks a partitioned parameter (models/, eval/ ask it)",
    "dsunlearn.uipe.delta_format": "the delta files' names, metadata and fix-up keys (writer and reader)",
    "dsunlearn.engine.process_group": "DeepSpeed's process-group set-up and accelerator choice (dist calls it)",
}
OBJECTIVES_MAY_IMPORT = {"dsunlearn.errors", "dsunlearn.hyperparams"}
OBJECTIVES_THIRD_PARTY = {"torch"}
DEEPSPEED_ONLY_IN = "engine"

# (importing module, imported module): imports allowed to break a rule. Empty: issue 13 removed the last ones;
# do not add to it, fix the import.
ALLOWED_VIOLATIONS: set[tuple[str, str]] = set()  # empty since issue 13 landed


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel.with_suffix(".py")).is_file() or (ROOT / rel / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, resolved: `from dsunlearn import dist` -> dsunlearn.dist, relative imports
    against the module's package, `from x import name` -> x when `x.name` is not a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # annotation-only imports (`if TYPE_CHECKING:`) are never executed: not a dependency
    skip = {
        id(n)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and _is_type_checking(branch.test)
        for stmt in branch.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            found.update(subs)
            if len(subs) < len(node.names):  # names that are not submodules come from `target` itself
                found.add(target)
    return found


def component_of(module: str) -> str | None:
    best, best_len = None, -1
    for comp, prefixes in COMPONENTS.items():
        for p in prefixes:
            inside = module == p or (p != "dsunlearn" and module.startswith(p + "."))
            if inside and len(p) > best_len:
                best, best_len = comp, len(p)
    return best


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def _suite_of(module: str) -> str | None:
    """`tofu` for dsunlearn.suites.tofu[.x]; None for dsunlearn.suites and modules directly in it."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and not (PKG / "suites" / f"{parts[2]}.py").is_file() else None


def rule_broken(me: str, imp: str) -> str | None:
    """The rule that module `me` importing module `imp` breaks, or None."""
    mine, top = component_of(me), imp.split(".")[0]
    if top == "deepspeed":
        return None if mine == DEEPSPEED_ONLY_IN else "only engine/ imports deepspeed"
    if top != "dsunlearn":
        if mine == "objectives" and top not in OBJECTIVES_THIRD_PARTY and top not in sys.stdlib_module_names:
            return "objectives/ import only torch and the standard library"
        return None
    theirs = component_of(imp)
    if me in SHARED:
        ok = theirs in ("leaf", "rundir", "config")
        return None if ok else "a shared module imports only the leaves, the run-dir modules and the config"
    if mine == "objectives":
        return None if theirs == "objectives" or imp in OBJECTIVES_MAY_IMPORT else "objectives/ import only errors"
    if imp in SHARED:
        return None
    if mine == theirs == "suites":
        # a suite is a package dsunlearn/suites/<name>/; modules directly in suites/ (the interface) are shared
        a, b = _suite_of(me), _suite_of(imp)
        return "a suite never imports another suite" if a and b and a != b else None
    if theirs in (mine, "leaf") or theirs in MAY_IMPORT[mine]:
        return None
    return f"{mine} may not import {theirs}"


def violations() -> set[tuple[str, str, str]]:
    """(importer, imported, which rule) for every import in the tree that breaks a rule."""
    out = set()
    for path in modules():
        me = module_name(path)
        for imp in imports_of(path):
            rule = rule_broken(me, imp)
            if rule:
                out.add((me, imp, rule))
    return out


def test_every_module_is_on_the_map():
    unplaced = [module_name(p) for p in modules() if component_of(module_name(p)) is None]
    assert not unplaced, (
        f"modules not placed in any component: {unplaced}; add them to COMPONENTS (and MAY_IMPORT) in "
        "tests/unit/test_architecture.py and to the tables of docs/architecture.md"
    )


def test_every_component_has_rules():
    assert set(MAY_IMPORT) == set(COMPONENTS)


def test_no_new_import_violations():
    new = sorted(v for v in violations() if v[:2] not in ALLOWED_VIOLATIONS)
    assert not new, "imports that break docs/architecture.md:\n" + "\n".join(f"  {a} -> {b}: {r}" for a, b, r in new)


def test_allow_list_has_no_fixed_entries():
    current = {v[:2] for v in violations()}
    stale = sorted(ALLOWED_VIOLATIONS - current)
    assert not stale, f"these allowed violations no longer occur: remove them from ALLOWED_VIOLATIONS: {stale}"


def test_the_checker_sees_violations():
    """The resolver and the rules catch what they should (on names, independent of today's tree)."""
    assert component_of("dsunlearn.engine.shard") == "engine"
    assert component_of("dsunlearn.config_io") == "config"
    assert component_of("dsunlearn") == "leaf"
    shard = imports_of(PKG / "engine" / "shard.py")
    assert "dsunlearn.dist" in shard  # from dsunlearn import dist
    assert "dsunlearn.engine.ds_internals" in shard  # from dsunlearn.engine import ds_internals as dsi
    assert "dsunlearn.objectives.types" in imports_of(PKG / "objectives" / "ga.py")  # relative import
    broken = [
        ("dsunlearn.engine.shard", "dsunlearn.recipes.unlearn"),
        ("dsunlearn.engine.checkpoint", "dsunlearn.suites.tofu.data"),
        ("dsunlearn.suites.tofu.evaluate", "dsunlearn.recipes.unlearn"),
        ("dsunlearn.suites.tofu.evaluate", "dsunlearn.objectives"),
        ("dsunlearn.suites.tofu.evaluate", "dsunlearn.suites.muse.data"),
        ("dsunlearn.eval.nll", "deepspeed"),
        ("dsunlearn.eval.nll", "dsunlearn.suites.tofu.log"),
        ("dsunlearn.objectives.ga", "numpy"),
        ("dsunlearn.objectives.ga", "dsunlearn.dist"),
        ("dsunlearn.recipes.unlearn", "dsunlearn.commands.unlearn"),
    ]
    assert all(rule_broken(a, b) for a, b in broken), [(a, b) for a, b in broken if not rule_broken(a, b)]
    fine = [
        ("dsunlearn.engine.ds_setup", "deepspeed"),
        ("dsunlearn.engine.reference", "dsunlearn.objectives.logprobs"),
        ("dsunlearn.suites.tofu.evaluate", "dsunlearn.eval.nll"),
        ("dsunlearn.suites.tofu.metrics", "dsunlearn.suites.tofu.log"),
        ("dsunlearn.suites.tofu.data", "dsunlearn.suites"),
        ("dsunlearn.objectives.ga", "torch"),
        ("dsunlearn.objectives", "dsunlearn.errors"),
        ("dsunlearn.commands.unlearn", "dsunlearn.recipes.unlearn"),
    ]
    assert not any(rule_broken(a, b) for a, b in fine), [(a, b) for a, b in fine if rule_broken(a, b)]
    assert component_of("dsunlearn.brand_new_module") is None  # a new top-level module must be placed on the map
    assert rule_broken("dsunlearn.models.load", "dsunlearn.engine.partitioning") is None  # shared modules
    assert rule_broken("dsunlearn.engine.partitioning", "dsunlearn.models.load")  # import only the leaves


def test_annotation_only_imports_do_not_count(tmp_path, monkeypatch):
    src = tmp_path / "dsunlearn" / "engine" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dsunlearn.geometry.gru import GRU\n"
        "else:\n    import dsunlearn.recipes.unlearn\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports_of(src) == {"typing", "dsunlearn.recipes.unlearn"}
