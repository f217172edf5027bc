"""YAML <-> `RunConfig`: loading, dotted overrides, type checks, resolved dump.

Every failure is a one-line `ConfigError` saying which key, what was given, what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path

import yaml

from dsunlearn.config import RunConfig, validate
from dsunlearn.config_bounds import short_repr
from dsunlearn.errors import ConfigError
from dsunlearn.fsutil import atomic_write_text

SHIPPED_DIR = Path(__file__).parent / "configs"
_ALIASES = {"lambda": "lambda_"}  # YAML key -> field name
_UNALIASES = {v: k for k, v in _ALIASES.items()}


# A YAML alias re-uses a node, so a few hundred bytes of nested aliases ("billion laughs") stand for 10^9
# nodes: cheap to parse, but every walk over the result (type checks, the repr of an error message,
# dump_config) expands it and exhausts memory. Configs have no use for more than a handful of aliases.
MAX_ALIASES = 100
MAX_NODES = 100_000  # nodes of a document with every alias expanded (a shipped config has ~100)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand past MAX_NODES, or that uses too many."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_ALIASES:
                raise _TooBig(f"more than {MAX_ALIASES} YAML aliases (*name)")
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and getattr(self, "_aliases", 0):
            _expanded_size(node, {}, MAX_NODES)
        return node


class _TooBig(yaml.YAMLError):
    pass


def _expanded_size(node, memo: dict, limit: int) -> int:
    """Nodes under `node` with aliases expanded (memoised per node, so the walk itself stays small)."""
    if id(node) in memo:
        return memo[id(node)]
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_size(c, memo, limit) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit) for k, v in node.value)
    if n > limit:
        raise _TooBig(f"YAML aliases that expand to more than {limit} values")
    memo[id(node)] = n
    return n


def safe_load_bounded(text: str, where: str):
    """`yaml.safe_load` that refuses alias bombs and nesting past Python's recursion limit (ConfigError)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except _TooBig as e:
        raise ConfigError(
            f"{where} uses {e} (an alias bomb?); write the values out instead of repeating anchors (&name / *name)"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to read; flatten it to the config's sections") from None
    except ValueError:  # int() refuses more than 4300 digits (sys.get_int_max_str_digits)
        raise ConfigError(f"{where} holds a number of more than 4300 digits; no setting takes one that long") from None


def shipped_configs() -> list[str]:
    """Names of the experiment YAMLs shipped with the package (usable as --config NAME)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = SHIPPED_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if p.parent == Path(".") and shipped.is_file():
        return shipped
    near = difflib.get_close_matches(p.stem, shipped_configs(), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near and p.parent == Path(".") else ""
    raise ConfigError(
        f"config file '{name_or_path}' not found{hint}; pass the path of an existing YAML file or a shipped config "
        "name (`dsunlearn configs` lists them)"
    )


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _unknown_key(key: str, allowed: list[str]) -> ConfigError:
    shown = [_UNALIASES.get(a, a) for a in allowed]
    near = difflib.get_close_matches(key.rsplit(".", 1)[-1], shown, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return ConfigError(f"unknown config key '{_short(key)}'{hint}; allowed here: {', '.join(shown)}")


def _example(f: dataclasses.Field, type_name: str) -> str:
    """The field's default as an override value (`1.0e-05`, `[full, retain]`), or `<type>` when it has none."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    if default is None or default is dataclasses.MISSING or "flat_keys" in f.metadata:
        return f"<{type_name}>"
    return yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()


def _coerce(key: str, value, tp, f: dataclasses.Field):
    """Check `value` against the annotation `tp`; return it converted (int -> float, '1e-5' -> 1e-5)."""
    args = typing.get_args(tp)
    optional = (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args
    if optional:
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
    base = typing.get_origin(tp) or tp
    ok = True
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-5' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                ok = False
        ok = ok and isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if math.isnan(value) or math.isinf(value):
                raise ConfigError(f"{key}={value} is not a finite number; give a real value like {key}=0.1")
    elif base is str:
        ok = isinstance(value, str)
    elif base is list:
        ok = isinstance(value, list)
    if not ok:
        want = getattr(base, "__name__", str(base)) + (" or null" if optional else "")
        example = _example(f, getattr(base, "__name__", "value"))
        raise ConfigError(
            f"{key}={short_repr(value)} has the wrong type: expected {want} ({f.metadata.get('help', '')}); "
            f"write e.g. {key}={example}"
        )
    if "canonical" in f.metadata:  # an alias becomes the stored value (open-unlearning's NPO -> npo)
        value = f.metadata["canonical"](key, value)
    choices = f.metadata.get("choices")
    choices = choices() if callable(choices) else choices  # a callable reads a registry (objective names)
    if choices is not None and value not in choices and not (key.endswith("retain_split")):
        allowed = ", ".join(map(str, choices))
        raise ConfigError(f"{key}={short_repr(value)} is not allowed; choose one of: {allowed}")
    return value


def _flat_field(cls) -> dataclasses.Field | None:
    """The field of `cls` whose dict takes the section's extra keys (`ObjectiveConfig.params`), if any."""
    return next((f for f in dataclasses.fields(cls) if "flat_keys" in f.metadata), None)


def _apply(obj, data: dict, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping of keys, got {type(data).__name__}")
    fields, hints = _fields(type(obj)), _field_types(type(obj))
    flat = _flat_field(type(obj))
    flat_types = flat.metadata["flat_keys"]() if flat is not None else {}
    if flat is not None:
        fields.pop(flat.name)  # its keys are written flat: objective.beta, never objective.params
    for raw_key, value in data.items():
        name = _ALIASES.get(raw_key, raw_key)
        key = prefix + (raw_key if isinstance(raw_key, str) else short_repr(raw_key))
        if name in flat_types and name not in fields:
            # Checked here for type (int -> float, NaN refused); which keys the chosen objective takes, in validate.
            getattr(obj, flat.name)[name] = _coerce(key, value, flat_types[name] | None, flat)
            continue
        if name not in fields:
            raise _unknown_key(key, list(fields) + list(flat_types))
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            _apply(getattr(obj, name), value if value is not None else {}, key + ".")
        else:
            setattr(obj, name, _coerce(key, value, tp, fields[name]))


def parse_overrides(pairs: list[str]) -> dict:
    """['objective.beta=0.1', 'run.output_dir=x'] -> nested dict; values are parsed as YAML scalars."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{_short(pair)}' is not key=value; write e.g. objective.beta=0.1")
        key, raw = pair.split("=", 1)
        try:
            value = safe_load_bounded(raw, f"override '{_short(pair)}'") if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{_short(pair)}' conflicts with another override of '{_short(part)}'")
        node[parts[-1]] = value
    return nested


def _read_yaml(p: Path) -> dict:
    try:
        data = safe_load_bounded(p.read_text(encoding="utf-8-sig"), f"config file '{p}'")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{p}' is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}' is not a UTF-8 text file; save it as UTF-8") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping (section: keys), not a {type(data).__name__}")
    return data


def _with_base(p: Path) -> list[tuple[Path, dict]]:
    """[(base file, data), (file, data)]: a file may name ONE `base:` (shipped name or path relative to it).

    Single level on purpose: a config reads as its base plus what it changes, never a chain to chase.
    """
    data = _read_yaml(p)
    base = data.pop("base", None)
    if base is None:
        return [(p, data)]
    rel = p.parent / str(base)
    bp = rel if rel.is_file() else resolve_config_path(str(base))
    bdata = _read_yaml(bp)
    if "base" in bdata:
        raise ConfigError(f"config '{bp}' (the base of '{p}') has a base itself; only one level is allowed")
    return [(bp, bdata), (p, data)]


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- base YAML <- YAML file (path or shipped name) <- dotted overrides; then `validate`."""
    cfg = RunConfig()
    if path is not None:
        for _, data in _with_base(resolve_config_path(path)):
            _apply(cfg, data, "")
    if overrides:
        _apply(cfg, parse_overrides(overrides), "")
    return validate(cfg)


def config_to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if "flat_keys" in f.metadata:  # the objective's hyper-parameters, as they are written: objective.beta
            out.update(v)
            continue
        out[_UNALIASES.get(f.name, f.name)] = config_to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def dump_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config (atomically). W&B keys never live in the config, so nothing secret is dumped."""
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_hash(cfg: RunConfig, ignore: tuple[str, ...] = ("run.overwrite",)) -> str:
    """A short hash of the resolved config, used to tell whether --resume continues the same run."""
    import hashlib

    d = config_to_dict(cfg)
    for key in ignore:
        section, name = key.split(".")
        d.get(section, {}).pop(name, None)
    return hashlib.sha256(yaml.safe_dump(d, sort_keys=True).encode()).hexdigest()[:16]
