"""The objectives' names and hyper-parameters as the config needs them, without importing torch.

The objectives registry (`objectives/__init__.py`) imports torch (about 2 s), and the config is validated
before anything heavy so that a refused command answers at once. So while the registry is not imported, its
table is read from the source: the `OBJECTIVES` dict of `objectives/__init__.py` gives each config name and
its function, the `from .module import function` lines where the function is, and the function's keyword-only
parameters (annotation: a `dsunlearn.hyperparams` alias or a plain type; default: a literal) are turned into
`HyperParam`s by the same `hyperparams.declared` as `inspect` reads them. Once the registry is imported (any
training process, or a test that registers an objective) it is the answer itself. Anything in the source this
reader does not follow (a computed default, another annotation) means: import the registry. The two readings
are equal for every shipped objective (tests/unit/test_objective_catalog.py).
"""

from __future__ import annotations

import ast
import builtins
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from dsunlearn import hyperparams
from dsunlearn.hyperparams import HyperParam

_OBJECTIVES_DIR = Path(__file__).resolve().parent / "objectives"
_REGISTRY = "dsunlearn.objectives"


class _NotFollowed(Exception):
    """The source says something this reader does not evaluate: ask the registry instead."""


def hyperparameter_table() -> Mapping[str, Mapping[str, HyperParam]]:
    """{objective name: {key: HyperParam}} in the registry's order: the registry's own when it is imported,
    else read from its source (falling back to importing it)."""
    if _REGISTRY not in sys.modules:
        try:
            return _from_source()
        except (_NotFollowed, OSError, SyntaxError, ValueError, TypeError):
            pass
    return _from_registry()


def _from_registry() -> Mapping[str, Mapping[str, HyperParam]]:
    from dsunlearn.objectives import OBJECTIVES

    return MappingProxyType({name: spec.hyperparams for name, spec in OBJECTIVES.items()})


@lru_cache(maxsize=1)
def _from_source() -> Mapping[str, Mapping[str, HyperParam]]:
    init = ast.parse((_OBJECTIVES_DIR / "__init__.py").read_text(encoding="utf-8"))
    where = {a.asname or a.name: (n.module, a.name) for n in init.body if isinstance(n, ast.ImportFrom) and n.level == 1
             for a in n.names}  # fmt: skip
    table = {}
    for name, fn in _registry_entries(init):
        if fn not in where:
            raise _NotFollowed(fn)
        module, fn_name = where[fn]
        table[name] = _signature(_OBJECTIVES_DIR / f"{module}.py", fn_name)
    return MappingProxyType(table)


def _registry_entries(init: ast.Module) -> list[tuple[str, str]]:
    """[(config name, function name)] of `OBJECTIVES = {"name": ObjectiveSpec("name", fn, ...), ...}`."""
    for node in init.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "OBJECTIVES" and isinstance(node.value, ast.Dict):
            out = []
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if not (isinstance(key, ast.Constant) and isinstance(value, ast.Call) and len(value.args) >= 2
                        and isinstance(value.args[1], ast.Name)):  # fmt: skip
                    raise _NotFollowed("OBJECTIVES entry")
                out.append((key.value, value.args[1].id))
            return out
    raise _NotFollowed("OBJECTIVES")


def _signature(path: Path, fn_name: str) -> Mapping[str, HyperParam]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn_name), None)
    if fn is None or fn.args.vararg or fn.args.kwarg:
        raise _NotFollowed(fn_name)
    positional = tuple(a.arg for a in fn.args.posonlyargs + fn.args.args)
    if positional not in (*hyperparams.DATA_ARGS.values(), hyperparams.PAIR_DATA_ARGS):
        raise _NotFollowed(fn_name)
    out = {}
    for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        if default is None or arg.annotation is None:
            raise _NotFollowed(arg.arg)
        try:
            value = ast.literal_eval(default)
        except ValueError:  # a computed default
            raise _NotFollowed(arg.arg) from None
        out[arg.arg] = hyperparams.declared(fn_name, arg.arg, _annotation(arg.annotation), False, value)
    return MappingProxyType(out)


def _annotation(node: ast.expr):
    """A `hyperparams` alias (`Beta`) or a builtin type (`float`), as the annotation's object."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        node = ast.parse(node.value, mode="eval").body
    if isinstance(node, ast.Name):
        if hasattr(hyperparams, node.id) and not node.id.startswith("_"):
            return getattr(hyperparams, node.id)
        if node.id in ("float", "int", "bool", "str"):
            return getattr(builtins, node.id)
    raise _NotFollowed(ast.dump(node))
