"""Structured outputs: vLLM 0.32's request surface mapped onto the engine's ``StructuredOutputsParams``,
validated before the engine sees anything.

Why validate here: a constraint the engine cannot decode kills its input thread (zero or two constraints,
§0.3), and one it cannot compile fails the request only after queueing, or worse (a NUL byte in a regex
may crash xgrammar natively; deep schemas hit recursive native code). So every constraint is checked
in this process first, and a bad one is a 400 naming the problem (:class:`ParamError`).

How, without torch: with **llguidance** (no runtime dependencies; the engine ships the same 1.7.x),
which compiles JSON schemas, regexes (a linear-time engine: no ReDoS in our process), Lark and GBNF
grammars, choices and legacy structural tags exactly as the engine's ``guidance`` backend does.
xgrammar, the other choice, requires torch. Backends:

* ``auto`` (the default) sends ``_backend="guidance"``, always: the engine then compiles with the very
  library we validated with, and the engine's backend (fixed by the first structured request it sees)
  never changes. This is vllm-rs's choice too.
* ``xgrammar`` sends ``_backend="xgrammar"`` and rewrites ``choice`` to an EBNF grammar as vLLM's
  frontend does (xgrammar's engine side has no choice support). Validation is llguidance's, a close
  but not exact proxy: what xgrammar still rejects finishes with an engine error, which the API layer
  turns into a 400.
* ``guidance`` as ``auto``. ``outlines`` and ``lm-format-enforcer`` are refused at start-up (we cannot
  validate for them).

The engine ignores per-request whitespace options (it uses its own ``--structured-outputs-config``), so
``disable_any_whitespace`` / ``disable_additional_properties`` / ``whitespace_pattern`` in a request are
refused with a 400 saying where to set them, rather than accepted and ignored.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from trio_front.engine import wire

from .params import ParamError

BACKENDS = ("auto", "xgrammar", "guidance")
_REFUSED_BACKENDS = ("outlines", "lm-format-enforcer")
_CONFIG_KEYS = {"backend", "disable_any_whitespace", "disable_additional_properties", "reasoning_parser"}
#: vLLM's ``MAX_STRUCTURED_OUTPUT_JSON_NESTING`` and the extra depth a structural tag's wrapper may take.
MAX_NESTING = 64
STRUCTURAL_TAG_EXTRA_NESTING = 16
_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
_REQUEST_OPTIONS = ("disable_any_whitespace", "disable_additional_properties", "whitespace_pattern")


@attrs.frozen
class StructuredConfig:
    """vLLM's ``--structured-outputs-config`` (the parts a frontend needs). Must agree with the engine's:
    ``trio-front serve`` passes the same JSON to the engine it starts."""

    backend: str = "auto"
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False

    def __attrs_post_init__(self) -> None:
        if self.backend in _REFUSED_BACKENDS:
            raise ValueError(
                f"--structured-outputs-config: backend {self.backend!r} is not supported by trio-front "
                f"(it validates grammars with llguidance); use one of {', '.join(BACKENDS)}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(
                f"--structured-outputs-config: unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}"
            )
        if self.disable_any_whitespace and self.backend == "auto":
            # vLLM's engine refuses disable_any_whitespace with backend auto; so would a mismatch here.
            raise ValueError(
                "--structured-outputs-config: disable_any_whitespace needs backend 'xgrammar' or 'guidance'"
            )
        if self.disable_additional_properties and self.backend != "guidance":
            raise ValueError(
                "--structured-outputs-config: disable_additional_properties needs backend 'guidance'"
            )

    @classmethod
    def from_json(cls, text: str) -> StructuredConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"--structured-outputs-config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("--structured-outputs-config must be a JSON object")
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"--structured-outputs-config: unsupported keys {unknown}; known: {sorted(_CONFIG_KEYS)}"
            )
        if data.get("reasoning_parser"):
            raise ValueError(
                "--structured-outputs-config: set the reasoning parser with --reasoning-parser instead"
            )
        for key in ("disable_any_whitespace", "disable_additional_properties"):
            if not isinstance(data.get(key, False), bool):
                raise ValueError(f"--structured-outputs-config: {key} must be a boolean")
        if not isinstance(data.get("backend", "auto"), str):
            raise ValueError("--structured-outputs-config: backend must be a string")
        return cls(
            backend=data.get("backend", "auto"),
            disable_any_whitespace=data.get("disable_any_whitespace", False),
            disable_additional_properties=data.get("disable_additional_properties", False),
        )

    @property
    def wire_backend(self) -> str:
        return "xgrammar" if self.backend == "xgrammar" else "guidance"


# ------------------------------------------------------------------------------------- request surface


def from_request(
    response_format: Any, structured_outputs: Any, *, config: StructuredConfig
) -> wire.StructuredOutputsParams | None:
    """Chat / completions: ``response_format`` and vLLM's ``structured_outputs`` (``response_format``
    overrides the same-named field, as vLLM's ``structured_outputs_from_response_format``)."""
    fields: dict[str, Any] = {}
    if structured_outputs is not None:
        if not isinstance(structured_outputs, dict):
            raise ParamError("structured_outputs must be an object", "structured_outputs")
        for key in _REQUEST_OPTIONS:
            if structured_outputs.get(key) not in (None, False):
                raise ParamError(
                    f"structured_outputs.{key} is decided by the engine's --structured-outputs-config "
                    "(the engine ignores it per request); set it there",
                    "structured_outputs",
                )
        unknown = sorted(set(structured_outputs) - set(_CONSTRAINTS) - set(_REQUEST_OPTIONS) - {"_backend"})
        if unknown:
            raise ParamError(f"structured_outputs: unknown fields {unknown}", "structured_outputs")
        backend = structured_outputs.get("_backend")
        if backend is not None and backend != config.wire_backend:
            raise ParamError(
                f"structured_outputs._backend {backend!r} differs from the server's backend "
                f"{config.wire_backend!r}",
                "structured_outputs",
            )
        fields = {k: structured_outputs[k] for k in _CONSTRAINTS if structured_outputs.get(k) is not None}
    if response_format is not None:
        fields.update(_from_response_format(response_format))
    if not fields:
        if structured_outputs is not None:
            raise ParamError(
                "You must use one kind of structured outputs constraint but none are specified",
                "structured_outputs",
            )
        return None
    return _validated(fields, config, "response_format" if response_format else "structured_outputs")


def _from_response_format(fmt: Any) -> dict[str, Any]:
    if not isinstance(fmt, dict):
        raise ParamError("response_format must be an object", "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise ParamError(
                "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
                "response_format",
            )
        if not isinstance(spec.get("name"), str):
            raise ParamError("response_format.json_schema.name must be a string", "response_format")
        schema = spec.get("schema")
        if schema is None:
            # OpenAI's schema is optional; vLLM then sends no constraint at all (json=None) and its
            # engine decoder rejects the empty constraint. "Any JSON object" is the sane reading.
            return {"json_object": True}
        return {"json": schema}
    if kind == "structural_tag":
        return {"structural_tag": json.dumps(fmt)}
    raise ParamError(
        f"response_format.type must be one of text, json_object, json_schema, structural_tag; got {kind!r}",
        "response_format",
    )


def from_text_format(fmt: Any, *, config: StructuredConfig) -> wire.StructuredOutputsParams | None:
    """The Responses API's flat ``text.format``: ``{"type": "json_schema", "name", "schema",
    "strict"?}``, ``{"type": "json_object"}`` or ``{"type": "text"}``."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise ParamError("text.format must be an object", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _validated({"json_object": True}, config, "text.format")
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise ParamError("text.format.schema must be a JSON schema object", "text.format")
        return _validated({"json": fmt["schema"]}, config, "text.format")
    raise ParamError(
        f"text.format.type must be text, json_object or json_schema; got {kind!r}", "text.format"
    )


def from_json_schema(schema: dict[str, Any], *, config: StructuredConfig) -> wire.StructuredOutputsParams:
    """A schema built by the server itself (``tool_choice`` required / named): validated all the same,
    since it embeds the client's parameter schemas."""
    return _validated({"json": schema}, config, "tools")


# ------------------------------------------------------------------------------------- validation


def _validated(fields: dict[str, Any], config: StructuredConfig, param: str) -> wire.StructuredOutputsParams:
    set_keys = [k for k in _CONSTRAINTS if fields.get(k) is not None]
    if len(set_keys) != 1:
        raise ParamError(
            "You can only use one kind of structured outputs constraint but multiple are specified: "
            + ", ".join(set_keys),
            param,
        )
    key = set_keys[0]
    value = fields[key]
    grammar_kind, spec = _check_shape(key, value, param)
    _check_with_llguidance(grammar_kind, spec, config, param)
    params = wire.StructuredOutputsParams(
        **{key: value},
        disable_any_whitespace=config.disable_any_whitespace,
        disable_additional_properties=config.disable_additional_properties,
        backend=config.wire_backend,
        backend_was_auto=config.backend == "auto",
    )
    if key == "choice" and config.wire_backend == "xgrammar":
        # xgrammar's engine side has no choice: vLLM's frontend sends it as a grammar.
        params = wire.StructuredOutputsParams(
            grammar=choice_as_grammar(value),
            disable_any_whitespace=params.disable_any_whitespace,
            disable_additional_properties=params.disable_additional_properties,
            backend=params.backend,
            backend_was_auto=params.backend_was_auto,
        )
    return params


def _check_shape(key: str, value: Any, param: str) -> tuple[str, Any]:
    """Types, emptiness, NULs and nesting (vLLM's ``_validate_structured_outputs`` steps 3–4)."""
    if key == "json":
        if isinstance(value, str):
            if not value.strip():
                raise ParamError("The JSON schema must not be empty", param)
            try:
                value = json.loads(value)
            except (ValueError, RecursionError) as exc:
                raise ParamError(f"The JSON schema is not valid JSON: {exc}", param) from None
        if not isinstance(value, (dict, bool)):
            raise ParamError("The JSON schema must be an object", param)
        _check_nesting(value, MAX_NESTING, param)
        return "json_schema", value
    if key == "json_object":
        if value is not True:
            raise ParamError("json_object must be true", param)
        return "json_schema", {"type": "object"}
    if key == "regex":
        # An empty or blank regex is valid (it matches "" / " "); vLLM accepts it too.
        if not isinstance(value, str):
            raise ParamError("The regex must be a string", param)
        if "\x00" in value:
            raise ParamError("The regex must not contain a NUL character", param)
        return "regex", value
    if key == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise ParamError("choice must be a non-empty list of strings", param)
        return "choice", value
    if key == "grammar":
        if not isinstance(value, str) or not value.strip():
            raise ParamError("The grammar must be a non-empty string", param)
        return "grammar", value
    if not isinstance(value, str) or not value.strip():
        raise ParamError("The structural tag must not be empty", param)
    try:
        tag = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise ParamError(f"The structural tag is not valid JSON: {exc}", param) from None
    _check_nesting(tag, MAX_NESTING + STRUCTURAL_TAG_EXTRA_NESTING, param)
    return "structural_tag", tag


def _check_nesting(spec: Any, limit: int, param: str) -> None:
    level = [spec]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, (dict, list))
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return
    raise ParamError(
        f"The JSON schema is nested too deeply: objects and arrays may nest at most {MAX_NESTING} levels",
        param,
    )


def _check_with_llguidance(kind: str, spec: Any, config: StructuredConfig, param: str) -> None:
    import llguidance  # imported on first use: most servers never see a grammar

    matcher = llguidance.LLMatcher
    try:
        if kind == "json_schema":
            grammar = matcher.grammar_from_json_schema(
                json.dumps(spec), defaults={"whitespace_flexible": not config.disable_any_whitespace}
            )
        elif kind == "structural_tag":
            grammar = _structural_tag_grammar(spec, config, param)
            if grammar is None:
                return  # xgrammar's own structural-tag format: left to the engine (its error is a 400)
        else:
            grammar = llguidance.grammar_from(kind if kind != "grammar" else "grammar", spec)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ParamError(f"Invalid {kind.replace('_', ' ')}: {exc}", param) from None
    error = matcher.validate_grammar(grammar, None)
    if error:
        raise ParamError(f"Invalid {kind.replace('_', ' ')}: {error}", param)


def _structural_tag_grammar(tag: Any, config: StructuredConfig, param: str) -> str | None:
    import llguidance

    if not isinstance(tag, dict):
        raise ParamError("The structural tag must be a JSON object", param)
    if "structures" not in tag:
        if config.wire_backend != "xgrammar" or not isinstance(tag.get("format"), dict):
            raise ParamError(
                "Structural tags in the {'type': 'structural_tag', 'format': ...} form need the xgrammar "
                "backend; use the legacy {'structures': [...], 'triggers': [...]} form",
                param,
            )
        return None
    triggers, structures = tag.get("triggers"), tag.get("structures")
    if not isinstance(triggers, list) or not isinstance(structures, list) or not structures:
        raise ParamError("A structural tag needs 'structures' and 'triggers' lists", param)
    tags = []
    for s in structures:
        if not isinstance(s, dict) or not all(isinstance(s.get(k), str) for k in ("begin", "end")):
            raise ParamError("Each structure needs string 'begin' and 'end'", param)
        trigger = next((t for t in triggers if isinstance(t, str) and s["begin"].startswith(t)), None)
        if trigger is None:
            raise ParamError(f"Trigger {s['begin']} not found in triggers {triggers}", param)
        schema = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(s.get("schema") or {}),
            defaults={"whitespace_flexible": not config.disable_any_whitespace},
        )
        tags.append(llguidance.StructTag(trigger=trigger, begin=s["begin"], grammar=schema, end=s["end"]))
    return llguidance.StructTag.to_grammar(tags)


def choice_as_grammar(choice: list[str]) -> str:
    """vLLM's ``choice_as_grammar``: ``root ::= "a" | "b"`` with EBNF escapes."""
    escapes = {"\\": r"\\", '"': r"\"", "\n": r"\n", "\r": r"\r", "\t": r"\t"}

    def escape(ch: str) -> str:
        if ch in escapes:
            return escapes[ch]
        return f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch

    return "root ::= " + " | ".join('"' + "".join(escape(c) for c in s) + '"' for s in choice)
