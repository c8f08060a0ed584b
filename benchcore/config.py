"""One way from YAML / dicts / ``--set`` items to typed configs, with one-line errors that name the file and key.

Every typed config of the suite (:class:`sdconet.models.config.SDCoNetConfig`,
:class:`sdconet.train_config.TrainConfig`, the :mod:`baselines.config` dataclasses) is built by :func:`from_dict`,
every command line ``--set`` is read by :func:`parse_sets`, and the Snakemake config is checked by
:func:`validate_workflow_config`. An unknown key reads the same everywhere::

    config/x.yaml: unknown key 'swin.embed_dims' for SwinConfig; did you mean 'swin.embed_dim'? (valid: depths, ...)

Example:
    >>> @dataclass
    ... class Opt:
    ...     depth: int = 2
    ...     widths: tuple[int, ...] = (8, 16)
    >>> from_dict(Opt, {"widths": [4, 8]})
    Opt(depth=2, widths=(4, 8))
    >>> nest(parse_sets(["yolo.epochs=3", "yolo.overrides.lr0=1.0e-3"]))
    {'yolo': {'epochs': 3, 'overrides': {'lr0': 0.001}}}

Coercion rules of :func:`from_dict` (by the field's type annotation): a nested dataclass from a mapping (``None``
reads as an empty mapping), tuples and lists from YAML lists (elements coerced, fixed-length tuples checked), dicts
from mappings, ``X | None`` accepts ``null``, ``bool`` only from true/false, ``int`` only from integers, ``float``
from numbers or a numeric string (PyYAML reads ``1e-4`` without a dot as a string; ``"inf"`` works too), ``str``
from strings or integers (``device: 0``). A field's ``metadata={"convert": fn}`` replaces the rule (``fn(value)``
returns the field value or raises ``ValueError``/``TypeError``).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar, Union

import yaml

__all__ = ["ConfigError", "flatten", "from_dict", "merge", "nest", "parse_sets", "suggest", "unknown_key_message",
           "validate_workflow_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """An unknown key, a missing required key or a bad value in a configuration (one line naming the key).

    The packages' own config errors (``sdconet.models.config.ConfigError``, ``sdconet.train_config.TrainConfigError``,
    ``baselines.config.ConfigError``) subclass it, so ``except benchcore.config.ConfigError`` catches them all.
    """


# ------------------------------------------------------------------------------------------------ messages
def suggest(key: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``key`` (difflib, cutoff 0.6), or None."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return close[0] if close else None


def unknown_key_message(source: str | None, path: str, valid: Iterable[str], owner: str | None = None,
                        note: str = "", kind: str = "key") -> str:
    """``{source}: unknown {kind} '{path}'[ for {owner}][ {note}]; did you mean '{closest}'? (valid: a, b, c)``.

    Args:
        source: the file (or other origin) the key came from; None leaves out the ``{source}: `` part.
        path: dotted path of the unknown key (``swin.embed_dims``).
        valid: the valid names at that level (bare names; the suggestion is given as a full dotted path).
        owner: the config class holding that level (``SwinConfig``).
        note: extra words after the key.
        kind: what the name is (``key``; ``section`` for a top-level section).
    """
    valid = sorted(str(v) for v in valid)
    parent, _, name = path.rpartition(".")
    close = suggest(name, valid)
    msg = f"{_src(source)}unknown {kind} '{path}'"
    msg += f" for {owner}" if owner else ""
    msg += f" {note}" if note else ""
    msg += f"; did you mean '{parent + '.' if parent else ''}{close}'?" if close else ""
    return msg + f" (valid: {', '.join(valid)})"


def _src(source: str | None) -> str:
    return f"{source}: " if source else ""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------------------------------- typed configs
def from_dict(cls: type[T], data: Mapping[str, Any] | None, source: str | None = None, prefix: str = "", *,
              error: type[ConfigError] = ConfigError) -> T:
    """Build the dataclass ``cls`` (nested, frozen or not) from a mapping; absent keys take their defaults.

    Args:
        cls: a dataclass type; fields whose type is a dataclass are built recursively from sub-mappings.
        data: the mapping (None reads as empty; a ``cls`` instance is accepted too).
        source: the file or origin named at the start of every error (None: not named).
        prefix: dotted path of ``data`` inside a larger config (``"train."``), used in the key paths of errors.
        error: the exception class raised (a :class:`ConfigError` subclass of the calling package).

    Returns:
        The instance (its ``__post_init__`` checks run; a :class:`ConfigError` they raise gets ``source`` in front).

    Raises:
        ConfigError (``error``): an unknown key (dotted path, closest valid key, valid keys), a missing required
            key or a value of the wrong type (dotted path and value), always in one line.
    """
    return _Builder(source, error).build(cls, data, prefix)


@dataclass(frozen=True)
class _Builder:
    source: str | None
    error: type[ConfigError]

    def fail(self, msg: str) -> ConfigError:
        return self.error(f"{_src(self.source)}{msg}")

    def build(self, cls: type, data: Any, prefix: str) -> Any:
        where = prefix.rstrip(".") or "<root>"
        if data is None:
            data = {}
        elif isinstance(data, cls):
            data = {f.name: getattr(data, f.name) for f in dataclasses.fields(cls) if f.init}
        if not isinstance(data, Mapping):
            raise self.fail(f"'{where}' must be a mapping of {cls.__name__} keys, got {_show(data)}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            path = f"{prefix}{key}"
            if key not in fields:
                raise self.error(unknown_key_message(self.source, path, fields, owner=cls.__name__))
            convert = fields[key].metadata.get("convert")
            if convert is not None:
                try:
                    kwargs[key] = convert(value)
                except (TypeError, ValueError) as exc:
                    raise self.fail(f"'{path}' {exc}") from exc
            else:
                kwargs[key] = self.coerce(hints.get(key, Any), value, path)
        missing = [f"{prefix}{n}" for n, f in fields.items() if n not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            names = ", ".join(f"'{m}'" for m in missing)
            raise self.fail(f"missing required key{'s' if len(missing) > 1 else ''} {names} for {cls.__name__}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:  # a __post_init__ check: name the source once
            if self.source and not str(exc).startswith(_src(self.source)):
                raise type(exc)(f"{_src(self.source)}{exc}") from exc
            raise
        except (TypeError, ValueError) as exc:
            raise self.fail(f"invalid config at '{where}': {exc}") from exc

    def coerce(self, tp: Any, value: Any, path: str) -> Any:  # noqa: C901, PLR0911, PLR0912 (one branch per type)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any or tp is object:
            return value
        if origin in (Union, types.UnionType):
            if value is None:
                if type(None) in args:
                    return None
                raise self.fail(f"'{path}' must not be null")
            options = [a for a in args if a is not type(None)]
            if len(options) == 1:
                return self.coerce(options[0], value, path)
            for opt in options:
                try:
                    return self.coerce(opt, value, path)
                except ConfigError:
                    continue
            raise self.fail(f"'{path}' must be {' or '.join(_type_name(o) for o in options)}, got {_show(value)}")
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.build(tp, value, f"{path}.")
        if origin is Literal:
            if value not in args:
                raise self.fail(f"'{path}' must be one of {', '.join(map(repr, args))}, got {_show(value)}")
            return value
        if tp is bool:
            if not isinstance(value, bool):
                raise self.fail(f"'{path}' must be true/false, got {_show(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(f"'{path}' must be an integer, got {_show(value)}")
            return value
        if tp is float:
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            raise self.fail(f"'{path}' must be a number, got {_show(value)}")
        if tp is str:
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str):
                raise self.fail(f"'{path}' must be a string, got {_show(value)}")
            return value
        if tp in (tuple, list) or origin in (tuple, list):
            if not isinstance(value, (list, tuple)):
                raise self.fail(f"'{path}' must be a list, got {_show(value)}")
            kind = origin or tp
            if kind is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
                raise self.fail(f"'{path}' must have {len(args)} entries, got {_show(value)}")
            if not args:
                return kind(value)
            elem = [args[0]] * len(value) if kind is list or args[-1] is Ellipsis else list(args)
            return kind(self.coerce(t, v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(elem, value)))
        if tp in (dict, Mapping, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
            if not isinstance(value, Mapping):
                raise self.fail(f"'{path}' must be a mapping, got {_show(value)}")
            vt = args[1] if len(args) == 2 else Any
            return {k: self.coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(tp, type) and not isinstance(value, tp):
            raise self.fail(f"'{path}' must be a {tp.__name__}, got {_show(value)}")
        return value


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: no coercion for that class
        return {}


def _type_name(tp: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


# ------------------------------------------------------------------------------------- --set and dotted keys
class _SetLoader(yaml.SafeLoader):
    """YAML 1.1 safe loading, plus YAML 1.2's floats without a dot (``1e-3``; PyYAML alone reads a string)."""


_FLOAT_NO_DOT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
_SetLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_NO_DOT, list("-+0123456789."))


def parse_sets(items: Iterable[str] | None, *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The one ``--set`` grammar: ``["train.epochs=3", "model.swin.window_size=8"]`` -> dotted-key dict.

    Each item is ``dotted.key=value``; the value is parsed as YAML (``3`` int, ``1e-3`` float, ``true``, ``null``,
    ``[1, 2]``, ``{a: 1}``; anything else a string; an empty value is ``null``). A later item overrides an earlier
    one with the same key. :func:`nest` turns the result into nested sections.

    Raises:
        ConfigError (``error``): an item without ``=``, with an empty key or key part, or with invalid YAML.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, text = str(item).partition("=")
        key = key.strip()
        if not eq:
            raise error(f"--set {item!r}: expected key=value (e.g. train.epochs=3)")
        if not key or not all(key.split(".")):
            raise error(f"--set {item!r}: the key must be a dotted name such as train.epochs")
        try:
            out[key] = yaml.load(text, Loader=_SetLoader) if text.strip() else None  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as exc:
            raise error(f"--set {item!r}: the value is not valid YAML ({' '.join(str(exc).split())})") from None
    return out


def nest(flat: Mapping[str, Any], *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2, "d": 3}`` -> ``{"a": {"b": 1, "c": 2}, "d": 3}`` (mapping values merged in).

    Raises:
        ConfigError: a key that is both a value and a section (``{"a": 1, "a.b": 2}``).
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise error(f"config key '{key}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
            node = nxt
        last = parts[-1]
        if isinstance(node.get(last), dict):
            if not isinstance(value, Mapping):
                raise error(f"config key '{key}' is a section; give a mapping or a dotted sub-key")
            node[last] = merge(node[last], value)
        else:
            node[last] = dict(value) if isinstance(value, Mapping) else value
    return out


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1, "c": {}}`` (the inverse of :func:`nest`; empty mappings kept)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merged key by key, anything else in ``override`` replaces ``base``'s (new dicts)."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        out[key] = merge(old, value) if isinstance(value, Mapping) and isinstance(old, Mapping) else value
    return out


# ----------------------------------------------------------------------------------------- Snakemake config
def validate_workflow_config(config: Mapping[str, Any], schema_path: str | Path,
                             source: str | Path | None = None) -> None:
    """Check the Snakemake config against its JSON schema; raise one line naming the file, the key and the fix.

    Run it before ``snakemake.utils.validate`` (which fills the schema's defaults but reports a failure with the
    whole schema). Paths follow nested objects, ``$ref``'d ``$defs`` and ``additionalProperties`` maps
    (``datasets.demo.tile.size``, ``degradations.bicubic_x2.scale``, ``seeds[1]``).

    Args:
        config: the loaded config.
        schema_path: the JSON schema (YAML or JSON file).
        source: the config file named in the message (default ``config/config.yaml``).

    Raises:
        ConfigError: e.g. ``config/x.yaml: unknown key 'degradations.bicubic_x2.scael' ('scael' was unexpected);
            did you mean 'degradations.bicubic_x2.scale'? (valid: blur, jpeg, kernel, noise, scale, seed)`` or
            ``config/x.yaml: bad value at 'degradations.bicubic_x2.scale': 5 (expected one of 2, 3, 4)``; when the
            config has several problems the most relevant is shown and the rest are counted.
    """
    import jsonschema  # noqa: PLC0415  (only the workflow needs it)

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if not errors:
        return
    best = jsonschema.exceptions.best_match(errors, key=_schema_rank)
    msg = _schema_message(best, str(source or "config/config.yaml"))
    more = len({(tuple(e.absolute_path), tuple(e.absolute_schema_path)) for e in errors}) - 1  # one per missing key
    if more:
        msg += f" (+{more} more problem{'s' if more > 1 else ''})"
    raise ConfigError(msg)


def _schema_rank(err: Any) -> tuple[Any, ...]:
    """Which error to show (the largest): the shallowest; there an unknown key, then one not from an if/then."""
    conditional = any(k in ("if", "then", "else") for k in err.absolute_schema_path)
    return -len(err.absolute_path), err.validator == "additionalProperties", not conditional


def _dotted(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _json(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_EXPECT = {"minimum": ">= {}", "maximum": "<= {}", "exclusiveMinimum": "> {}", "exclusiveMaximum": "< {}",
           "minItems": "at least {} item(s)", "maxItems": "at most {} item(s)", "minProperties": "at least {} key(s)",
           "maxProperties": "at most {} key(s)", "minLength": "at least {} character(s)",
           "maxLength": "at most {} character(s)", "pattern": "a string matching {}", "const": "{}"}


def _schema_message(err: Any, source: str) -> str:
    """One line for one ``jsonschema.ValidationError``."""
    path = _dotted(err.absolute_path)
    inst, kw, want = err.instance, err.validator, err.validator_value
    if kw == "additionalProperties" and want is False and isinstance(inst, Mapping):
        props = err.schema.get("properties", {})
        patterns = list(err.schema.get("patternProperties", {}))
        extra = [k for k in inst if k not in props and not any(re.search(p, str(k)) for p in patterns)]
        if extra:
            key = f"{path}.{extra[0]}" if path else str(extra[0])
            more = f"; also unknown: {', '.join(repr(str(k)) for k in extra[1:])}" if extra[1:] else ""
            return unknown_key_message(source, key, props, note=f"('{extra[0]}' was unexpected){more}")
    if kw == "required" and isinstance(inst, Mapping):
        missing = [k for k in want if k not in inst]
        keys = ", ".join(f"'{path}.{k}'" if path else f"'{k}'" for k in missing)
        return f"{source}: missing required key{'s' if len(missing) > 1 else ''} {keys}"
    if "propertyNames" in err.schema_path:
        return (f"{source}: bad key name {_json(inst)} in '{path or '<root>'}' "
                f"(expected {_expect(kw, want) or err.message})")
    expect = _expect(kw, want) or " ".join(err.message.split())
    return f"{source}: bad value at '{path or '<root>'}': {_json(inst)} (expected {expect})"


def _expect(kw: str, want: Any) -> str | None:
    if kw == "type":
        kinds = [want] if isinstance(want, str) else list(want)
        return " or ".join("null" if k == "null" else f"{'an' if k[0] in 'aeiou' else 'a'} {k}" for k in kinds)
    if kw == "enum":
        return "one of " + ", ".join(_json(v) for v in want)
    if kw in _EXPECT:
        return _EXPECT[kw].format(_json(want) if kw == "const" else want)
    return None


def read_yaml(path: str | Path, what: str = "config", *, error: type[ConfigError] = ConfigError) -> Any:
    """The parsed YAML file at ``path`` (``{}`` for an empty one); one-line ``error`` naming the file otherwise."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc})") from None
