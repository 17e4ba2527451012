"""argparse declarations of vLLM's frontend flags for ``trio-front run`` and ``serve``.

Same spellings, parsing and defaults as vLLM 0.32's ``vllm serve`` (``entrypoints/launchers/cli_args.py``
and ``engine/arg_utils.py::_compute_kwargs``): ``--api-key A B`` (nargs +; given twice, the last one wins,
as in vLLM), ``--allowed-origins '["https://a"]'`` (one JSON list), ``--served-model-name A B``,
``--ssl-cert-reqs 2`` (an int), booleans with their ``--no-`` forms, ``""`` or ``None`` for "unset" on
optional strings, and ``--flag_name`` for ``--flag-name`` (:func:`vllm_spellings`). The parsed dests are
vLLM's own, so :func:`frontend_fields` maps them through the same table as the drop-in's args JSON.

One deliberate difference: ``--host`` unset binds 127.0.0.1 (vLLM binds every interface); the parsed
value is vLLM's (None), the FrontendConfig default decides.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trio_front.flags.vllm_serve import TABLE, Kind, map_values

log = logging.getLogger("trio_front.flags")


def _optional(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    """vLLM's ``optional_type``: ``""`` and ``"None"`` mean unset."""

    def parse(value: str) -> Any:
        return None if value in ("", "None") else cast(value)

    parse.__name__ = getattr(cast, "__name__", "value")  # argparse names the type in its errors
    return parse


def _json_list(value: str) -> list[Any]:
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a JSON list: {exc}") from None
    if not isinstance(data, list):
        raise argparse.ArgumentTypeError(f"expected a JSON list such as '[\"*\"]', got {value!r}")
    return data


def _json_object(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r}")
    return data


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


class _LastWins(argparse.Action):
    """nargs='+' like vLLM's, noting a repeat (vLLM keeps the last one too, with a warning)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        if getattr(namespace, self.dest, None) is not None:
            repeated = getattr(namespace, "_repeated_options", set())
            namespace._repeated_options = repeated | {option_string or self.dest}
        setattr(namespace, self.dest, list(values))


BOOL = argparse.BooleanOptionalAction


def add_vllm_options(p: argparse.ArgumentParser) -> list[str]:
    """Declare vLLM's frontend flags, grouped for ``--help``, with vLLM's defaults (``tests/flags`` checks);
    returns their dests (all HONOURED in the table; the model is each command's own argument)."""
    declared: list[str] = []

    def add(group: argparse._ArgumentGroup, *names: str, **kwargs: Any) -> None:
        action = group.add_argument(*names, **kwargs)
        declared.append(action.dest)

    g = p.add_argument_group("model (vLLM's flags)")
    add(g, "--served-model-name", nargs="+", type=_optional(str), default=None, metavar="NAME",
        help="names clients use for the model, the first one in responses (default: the model directory's "
        "name)")  # fmt: skip
    add(g, "--tokenizer", default=None, metavar="DIR",
        help="the tokenizer's directory, when it is not the model's")  # fmt: skip
    add(g, "--chat-template", type=_optional(str), default=None,
        help="a chat template: file path, or the template itself")  # fmt: skip
    add(g, "--trust-request-chat-template", action=BOOL, default=False,
        help="let a request's own chat_template be used (refused otherwise)")  # fmt: skip
    add(g, "--default-chat-template-kwargs", type=_json_object, default=None, metavar="JSON",
        help="chat_template_kwargs every request starts from (its own override them), e.g. "
        '\'{"enable_thinking": false}\'')  # fmt: skip
    add(g, "--response-role", default="assistant", metavar="ROLE",
        help="the role of chat answers when add_generation_prompt is true (default assistant)")  # fmt: skip
    add(g, "--generation-config", default="auto", metavar="auto|vllm|DIR",
        help="where sampling defaults come from: auto = the model's generation_config.json, vllm = none, "
        "or a directory holding one (default auto)")  # fmt: skip
    add(g, "--override-generation-config", type=_json_object, default={}, metavar="JSON",
        help='sampling defaults over the generation config\'s, e.g. \'{"temperature": 0.5}\'')  # fmt: skip

    g = p.add_argument_group("HTTP server (vLLM's flags)")
    add(g, "--host", type=_optional(str), default=None,
        help="HTTP bind host (default 127.0.0.1; vLLM's default is every interface)")  # fmt: skip
    add(g, "--port", type=int, default=8000, help="HTTP port (default 8000)")
    add(g, "--uds", type=_optional(str), default=None, metavar="PATH",
        help="serve on this Unix socket instead of host:port")  # fmt: skip
    add(g, "--root-path", type=_optional(str), default=None, metavar="PATH",
        help="the path prefix a proxy in front strips")  # fmt: skip
    add(g, "--api-key", nargs="+", type=_optional(str), action=_LastWins, default=None, metavar="KEY",
        help="require one of these keys (Authorization: Bearer KEY) on /v1/*, /tokenize, /detokenize, "
        "/inference/* and the WebSockets; default: $VLLM_API_KEY if set. Give several keys as "
        "--api-key A B: given twice, the last one wins (as in vLLM)")  # fmt: skip
    add(g, "--allowed-origins", type=_json_list, default=[], metavar="JSON",
        help="CORS origins as a JSON list, e.g. '[\"https://app.example\"]' (default none)")  # fmt: skip
    add(g, "--allowed-methods", type=_json_list, default=["*"], metavar="JSON",
        help="CORS methods as a JSON list (default [\"*\"])")  # fmt: skip
    add(g, "--allowed-headers", type=_json_list, default=["*"], metavar="JSON",
        help="CORS headers as a JSON list (default [\"*\"])")  # fmt: skip
    add(g, "--allow-credentials", action=BOOL, default=False, help="CORS: allow credentials")
    add(g, "--ssl-keyfile", type=_optional(str), default=None, metavar="FILE", help="TLS private key")
    add(g, "--ssl-certfile", type=_optional(str), default=None, metavar="FILE", help="TLS certificate")
    add(g, "--ssl-ca-certs", type=_optional(str), default=None, metavar="FILE",
        help="CA certificates to check client certificates against")  # fmt: skip
    add(g, "--ssl-cert-reqs", type=int, default=0, metavar="N",
        help="client certificates: 0 none, 1 optional, 2 required (ssl.CERT_*; default 0)")  # fmt: skip
    add(g, "--ssl-ciphers", type=_optional(str), default=None, help="TLS 1.2 cipher suites")
    add(g, "--enable-request-id-headers", action=BOOL, default=False,
        help="answer with X-Request-Id (the client's, else a fresh one)")  # fmt: skip
    add(g, "--disable-uvicorn-access-log", action=BOOL, default=False,
        help="no access-log line per request (it is on by default, as vLLM's)")  # fmt: skip
    add(g, "--h11-max-incomplete-event-size", type=int, default=4194304, metavar="BYTES",
        help="largest HTTP/1.1 request head (default 4194304)")  # fmt: skip
    add(g, "--h11-max-header-count", type=int, default=256, metavar="N",
        help="most headers in an HTTP/1.1 request (default 256)")  # fmt: skip
    add(g, "--shutdown-timeout", type=int, default=0, metavar="SECONDS",
        help="on SIGTERM, in-flight requests may finish this long before they are aborted "
        "(default 0)")  # fmt: skip

    g = p.add_argument_group("tool calling, reasoning and structured outputs (vLLM's flags)")
    add(g, "--enable-auto-tool-choice", action=BOOL, default=False,
        help="extract the model's own tool calls for tool_choice 'auto' "
        "(needs --tool-call-parser)")  # fmt: skip
    add(g, "--tool-call-parser", type=_optional(str), default=None, metavar="NAME",
        help="the model family's tool-call format")  # fmt: skip
    add(g, "--exclude-tools-when-tool-choice-none", action=BOOL, default=False,
        help="do not render tools into the prompt when tool_choice is 'none'")  # fmt: skip
    add(g, "--reasoning-parser", default="", metavar="NAME",
        help="split reasoning from content; `serve` passes it to the engine too (so structured outputs "
        "apply after the reasoning), with `run` give the engine the same flag")  # fmt: skip
    add(g, "--structured-outputs-config", metavar="JSON", default=None,
        help='e.g. \'{"backend": "guidance", "disable_any_whitespace": true}\'; must agree with the '
        "engine's own (`serve` passes it to the engine)")  # fmt: skip

    g = p.add_argument_group("request surface (vLLM's flags)")
    add(g, "--max-logprobs", type=int, default=20, metavar="N",
        help="largest logprobs / top_logprobs / prompt_logprobs a request may ask for, -1 for the "
        "vocabulary (default 20; `serve` passes it to the engine)")  # fmt: skip
    add(g, "--lora-modules", nargs="+", type=_optional(str), default=None, metavar="NAME=PATH|JSON",
        help='LoRA adapters to load at start-up: name=path, or JSON {"name": ..., "path": ..., '
        '"base_model_name": ...}; the engine needs --enable-lora (`serve` adds it)')  # fmt: skip
    add(g, "--return-tokens-as-token-ids", action=BOOL, default=False,
        help="logprobs name tokens 'token_id:N' unless a request says otherwise")  # fmt: skip
    add(g, "--enable-force-include-usage", action=BOOL, default=False,
        help="usage on every stream, as if each request set stream_options.include_usage")  # fmt: skip
    add(g, "--anthropic-disabled-thinking-effort", choices=("auto", "none", "low", "medium", "high", "xhigh",
        "max"), default="auto", help="/v1/messages thinking.type=disabled -> this reasoning_effort (auto: "
        "probe the chat template, as vLLM)")  # fmt: skip
    add(g, "--fingerprint-mode", choices=("full", "hash", "custom", "none"), default="full",
        help="system_fingerprint: full = vllm-<version>[-tpN...]-<hash8> of the model and engine, hash = "
        "without parallelism, custom = --fingerprint-value, none = null (default full)")  # fmt: skip
    add(g, "--fingerprint-value", type=_optional(str), default=None, metavar="TEXT",
        help="the system_fingerprint with --fingerprint-mode custom")  # fmt: skip
    add(g, "--enable-scale-out", action=BOOL, default=False,
        help="serve /v1/completions/render, /v1/chat/completions/render, /inference/v1/generate and "
        "/inference/v1/abort_requests (403 otherwise, as vLLM)")  # fmt: skip
    add(g, "--enable-server-load-tracking", action=BOOL, default=False,
        help="count in-flight generate requests for GET /load")  # fmt: skip
    add(g, "--stream-interval", type=_positive_int, default=1, metavar="N",
        help="stream tokens N at a time (the first and the last at once); fewer, bigger events cost less "
        "CPU (default 1: every engine step)")  # fmt: skip
    add(g, "--sse-keep-alive-interval", "--keep-alive-interval", type=float, default=0, metavar="SECONDS",
        help="after this many idle seconds send an SSE comment on streams, a ping on WebSockets "
        "(default 0: off)")  # fmt: skip
    g = p.add_argument_group("data parallelism (vLLM's flags)")
    add(g, "--data-parallel-size", "-dp", type=_positive_int, default=1, metavar="N",
        help="engine ranks in the data-parallel group: `run` handshakes with all N (local or on other "
        "nodes) and balances requests over them; `serve` starts them (default 1)")  # fmt: skip
    add(g, "--data-parallel-size-local", "-dpl", type=_optional(_positive_int), default=None, metavar="K",
        help="`serve`: start only ranks 0..K-1 here; the others connect from other nodes with vllm serve "
        "--headless -dp N -dpl K2 -dpr K --data-parallel-address HOST --data-parallel-rpc-port PORT "
        "(default: all N here)")  # fmt: skip
    for dest in declared:  # a declaration that is not in the table would be mapped by nothing
        assert TABLE[dest].kind is Kind.HONOURED, dest
    return declared


@functools.cache
def cli_dests() -> tuple[str, ...]:
    """The dests :func:`add_vllm_options` declares."""
    return tuple(add_vllm_options(argparse.ArgumentParser(add_help=False)))


def add_own_options(p: argparse.ArgumentParser) -> None:
    """trio-front's own flags (no vLLM counterpart)."""
    g = p.add_argument_group("trio-front's own")
    g.add_argument("--send-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="cut off a client (streamed response or WebSocket) that leaves one write unread this "
                   "long, aborting its engine requests (default 30)")  # fmt: skip
    g.add_argument("--allow-engine-version-mismatch", action="store_true",
                   help="warn instead of refusing an engine whose vLLM minor version is not "
                   "0.32")  # fmt: skip
    g.add_argument("--ping-interval", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between engine liveness pings (0 disables; default 5)")  # fmt: skip
    g.add_argument("--ping-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="declare the engine dead if a ping gets no answer for this long "
                   "(default 30)")  # fmt: skip


_ENV_KEYS = {"VLLM_ENGINE_READY_TIMEOUT_S": "engine_ready_timeout_secs",
             "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "http_timeout_keep_alive"}  # fmt: skip


def frontend_fields(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """FrontendConfig fields from the vLLM flags of a parsed ``run`` / ``serve`` command line, through
    :func:`~trio_front.flags.vllm_serve.map_values` (and so ``VLLM_API_KEY``), plus vLLM's
    ``VLLM_ENGINE_READY_TIMEOUT_S`` / ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` (ints, as vLLM parses them).

    Raises SystemExit with a message naming the flag for a value trio-front cannot take.
    """
    values = {dest: getattr(args, dest) for dest in cli_dests() if hasattr(args, dest)}
    for env, key in _ENV_KEYS.items():
        if environ.get(env):
            try:
                values[key] = int(environ[env])
            except ValueError:
                raise SystemExit(
                    f"trio-front: error: {env} must be an integer, got {environ[env]!r}"
                ) from None
    for option in sorted(getattr(args, "_repeated_options", ())):
        log.warning("%s was given more than once: only the last one counts (as in vLLM)", option)
    mapped = map_values(values, environ)
    if mapped.refused:
        raise SystemExit("trio-front: error: " + "; ".join(mapped.refused))
    return mapped.fields


_LONG_OPTION = re.compile(r"^--[^=.]*")
#: the JSON-object flags whose keys vLLM also takes one by one (``--override-generation-config.top_k 5``)
_DOTTED = ("--override-generation-config", "--structured-outputs-config")


def vllm_spellings(argv: Sequence[str]) -> list[str]:
    """What vLLM's FlexibleArgumentParser accepts besides argparse's own: ``--flag_name`` for
    ``--flag-name``, and a JSON-object flag's keys given one by one (``--structured-outputs-config.backend
    guidance``, nested with more dots, ``key+ a,b`` for a list; a value is JSON if it parses, else a
    string), merged into one ``--flag JSON`` placed last (so it wins over a whole-object one, as in vLLM).
    """
    out: list[str] = []
    dotted: dict[str, dict[str, Any]] = {}
    args = [_LONG_OPTION.sub(lambda m: m.group(0).replace("_", "-"), a) if a.startswith("--") else a
            for a in argv]  # fmt: skip
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, _, rest = arg.partition(".")
        if name not in _DOTTED or not rest:
            out.append(arg)
            continue
        if "=" in rest:
            path, text = rest.split("=", 1)
        elif i < len(args):
            path, text = rest, args[i]
            i += 1
        else:
            out.append(arg)  # argparse reports the missing value
            continue
        if path.endswith("+"):
            path, text = path[:-1], json.dumps(text.split(","))
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = path.split(".")
        node = dotted.setdefault(name, {})
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    for name, value in dotted.items():
        out += [name, json.dumps(value)]
    return out
