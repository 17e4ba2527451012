"""Schema-directed argument typing, as vLLM 0.32's parser engine does it (``_fix_arg_types``).

Contract: :func:`fix_arg_types` takes a call's arguments (a JSON object string) and the tool's
``parameters`` schema; every top-level value whose key the schema declares is coerced to the declared
type (strings by :func:`coerce_str`; other values through their JSON text; nested objects and arrays
follow ``properties`` / ``items``). If anything changed the object is re-serialised with
``json.dumps(..., ensure_ascii=False)``, else the string is returned as given. Pure functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

_ALIASES = {
    **dict.fromkeys(("str", "text", "varchar", "char", "enum"), "string"),
    **dict.fromkeys(
        ("int", "int32", "int64", "uint", "uint32", "uint64", "long", "short", "unsigned"), "integer"
    ),
    **dict.fromkeys(("float", "float32", "float64", "double"), "number"),
    "bool": "boolean",
    "dict": "object",
    **dict.fromkeys(("arr", "list", "sequence"), "array"),
}
_PRIORITY = ("null", "integer", "number", "boolean", "object", "array", "string")


def schema_types(schema: Any) -> set[str]:
    """The type names a schema allows (``type``, ``enum`` values, ``anyOf``/``oneOf``/``allOf``);
    ``{"string"}`` when it says nothing."""
    if not isinstance(schema, dict):
        return {"string"}
    types: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(t for t in declared if isinstance(t, str))
    enum = schema.get("enum")
    if isinstance(enum, list):
        for v in enum:
            types.add(_json_type(v))
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            for choice in schema[key]:
                types |= schema_types(choice)
    return types or {"string"}


def _json_type(v: Any) -> str:
    # bool before int: bool is an int subclass.
    for cls, name in ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number")):
        if isinstance(v, cls):
            return name
    return {str: "string", list: "array", dict: "object"}.get(type(v), "string")


def _finite(obj: Any) -> bool:
    try:
        json.dumps(obj, allow_nan=False)
    except (ValueError, TypeError):
        return False
    return True


def coerce_str(value: str, types: set[str]) -> Any:
    """Best-effort conversion of a raw string to the first allowed type that accepts it, in vLLM's
    priority order; returns *value* itself (the same object) when it stays a string."""
    allowed = {_ALIASES.get(t.strip().lower(), t.strip().lower()) for t in types}
    for t in _PRIORITY:
        if t not in allowed:
            continue
        if t == "string":
            return value
        if t == "null":
            if value.lower() == "null":
                return None
        elif t == "integer":
            try:
                return int(value)
            except ValueError:
                pass
        elif t == "number":
            try:
                f = float(value)
            except ValueError:
                continue
            if math.isfinite(f):  # inf/nan are not JSON numbers: keep the string
                return f if f != int(f) else int(f)
        elif t == "boolean":
            low = value.lower().strip()
            if low in ("true", "1"):
                return True
            if low in ("false", "0"):
                return False
        else:  # object / array
            try:
                parsed = json.loads(value)
            except ValueError:
                continue
            if _finite(parsed):
                return parsed
    # No known type: JSON if it parses to something finite.
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if _finite(parsed) else value


def _coerce(value: Any, schema: dict) -> tuple[Any, bool]:
    if isinstance(value, str):
        out = coerce_str(value, schema_types(schema))
        return out, out is not value
    if isinstance(value, dict):
        props = schema.get("properties")
        return value, isinstance(props, dict) and _coerce_dict(value, props)
    if isinstance(value, list):
        items = schema.get("items")
        changed = False
        if isinstance(items, dict):
            for i, item in enumerate(value):
                out, c = _coerce(item, items)
                if c:
                    value[i] = out
                    changed = True
        return value, changed
    # A number, bool or null: through its JSON text (so e.g. 5 for a string parameter becomes "5").
    out = coerce_str(json.dumps(value, ensure_ascii=False), schema_types(schema))
    return out, type(out) is not type(value) or out != value


def _coerce_dict(args: dict, props: dict) -> bool:
    changed = False
    for key, value in args.items():
        prop = props.get(key)
        if isinstance(prop, dict):
            out, c = _coerce(value, prop)
            if c:
                args[key] = out
                changed = True
    return changed


def fix_arg_types(arguments: str, parameters: Mapping[str, Any] | None) -> str:
    """*arguments* typed by the tool's *parameters* schema (see the module docstring)."""
    props = parameters.get("properties") if parameters else None
    if not props or not isinstance(props, dict):
        return arguments
    try:
        args = json.loads(arguments)
    except ValueError:
        return arguments
    if not isinstance(args, dict) or not _coerce_dict(args, props):
        return arguments
    return json.dumps(args, ensure_ascii=False)
