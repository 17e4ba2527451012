"""Support for the hypothesis fuzz tests: a server in its own thread, the engine-safety witness, and the
strategies that turn valid requests into hostile ones.

**One server per test module.** pytest-trio runs every hypothesis example in a fresh ``trio.run``, so a
server living in the test's loop would be rebuilt per example. :class:`ThreadedServer` instead runs the
mock engine and hypercorn (``tests/api/conftest.py::start_server``) in a trio loop on a background thread;
the examples are plain synchronous functions that talk to it over loopback with ``httpx`` and the
``websockets`` sync client, each call bounded by a timeout (a hang fails the example).

**The witness** (:meth:`ThreadedServer.check_engine`): the mock runs with ``hazards="faithful"``, so it
dies, goes deaf or goes mute on exactly the messages that do that to vLLM 0.32's engine core; it must
record no ``hazard`` event and stay alive. Some engine-killers the mock does not model (they would crash
the real engine inside the model step: token ids outside the vocabulary in the prompt, ``stop_token_ids``,
``logit_bias``, ``allowed_token_ids`` or bad words; ``logprobs`` / ``prompt_logprobs`` above
``max_logprobs``; a structured-output constraint count other than one): :func:`extra_hazards` checks every
decoded ADD for those. Any ERROR logged by trio-front or hypercorn (an unhandled exception, even inside a
stream already answered 200) fails the example too.

**Hostile values** (:func:`mutated_json`): a valid request's JSON tree with one to three nodes replaced
(wrong types, huge and tiny numbers, ``2**64``, NaN/Infinity and ``1e400`` as JSON tokens, lone surrogate
escapes, 10^4-deep nesting, megabyte strings), keys deleted or added, a key duplicated with a hostile last
value; the encoded body is sometimes cut short, prefixed with a BOM or salted with invalid UTF-8 bytes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.api.conftest import Server, start_server
from trio_front.engine import wire
from trio_front.engine.mock import core as mock_core

#: what every fuzz test runs with: deterministic (same examples every run), no per-example deadline
#: (loaded CI machines), nothing stored between runs
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
#: ``TRIO_FRONT_FUZZ_SCALE=10`` runs ten times the examples (a longer local hunt; CI runs the default 1)
SCALE = float(os.environ.get("TRIO_FRONT_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    """*n* examples, scaled by ``TRIO_FRONT_FUZZ_SCALE``."""
    return max(1, round(n * SCALE))


#: per request: generous for a loaded 2-core machine, far below "hung"
TIMEOUT = 20.0
VOCAB = 4096
MAX_LOGPROBS = 20
#: the mock's engine settings: a short context and fast steps, so an accepted huge ``max_tokens`` ends soon
MOCK = {"step_ms": 0.5, "max_model_len": 512, "vocab": VOCAB, "hazards": "faithful"}


# ------------------------------------------------------------------------------------- the server


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        trace = "".join(traceback.format_exception(*record.exc_info)[-6:]) if record.exc_info else ""
        self.records.append(f"{record.name}: {record.getMessage()}\n{trace}")


def extra_hazards(req: Any) -> list[str]:
    """Engine-killers in one decoded ADD (a ``MockRequest``) that the mock itself does not model."""
    problems: list[str] = []

    def ids(name: str, values: Any) -> None:
        bad = [v for v in values or () if not 0 <= v < VOCAB]
        if bad:
            problems.append(f"{name} outside the vocabulary: {bad[:5]}")

    ids("prompt_token_ids", req.prompt_token_ids)
    p: wire.SamplingParams | None = req.sampling_params
    if p is not None:
        ids("stop_token_ids", p.stop_token_ids)
        ids("allowed_token_ids", p.allowed_token_ids)
        ids("logit_bias", list((p.logit_bias or {}).keys()))
        for word in p.bad_words_token_ids or ():
            ids("bad_words", word)
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(p, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                problems.append(f"{name}={value} (max_logprobs {MAX_LOGPROBS})")
        so = p.structured_outputs
        if so is not None:
            fields = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
            count = sum(getattr(so, f) is not None for f in fields)
            if count != 1:
                problems.append(f"structured_outputs with {count} constraints")
        if p.seed is not None and not -(2**63) <= p.seed < 2**64:
            problems.append(f"seed {p.seed} outside 64 bits")
    return problems


class ThreadedServer:
    """trio-front on the mock engine, in a trio loop on its own thread (see the module docstring).

    :meth:`close` cancels the loop's nursery (hypercorn and the mock stop) and joins the thread."""

    def __init__(self, frontend: dict[str, Any] | None = None, **mock: Any) -> None:
        self._frontend = frontend or {}
        self._mock = {**MOCK, **mock}
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.server: Server | None = None
        self.errors = _ErrorLog()
        self.hazards: list[str] = []
        #: per endpoint, how its examples were answered (status codes, error codes): what a run covered
        self.tally: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def start(self) -> ThreadedServer:
        logging.getLogger().addHandler(self.errors)
        self._thread.start()
        if not self._ready.wait(60) or self.server is None:
            raise RuntimeError(f"the fuzz server did not start: {self._failure!r}")
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.server = await start_server(nursery, frontend=self._frontend, **self._mock)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
        logging.getLogger().removeHandler(self.errors)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run *fn* in the server's loop (to read its state without racing it)."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def settle(self, timeout: float = TIMEOUT) -> None:
        """Wait until no engine request is open or live (a cancelled stream's abort has landed)."""
        assert self.server is not None
        server = self.server

        async def wait() -> None:
            with trio.fail_after(timeout):
                while server.app.engine.open_requests or server.mock.live_request_ids:
                    await trio.sleep(0.005)

        trio.from_thread.run(wait, trio_token=self._token)

    def begin(self) -> None:
        """Start an example: forget what the previous (failed, being shrunk) example logged."""
        self.errors.records.clear()
        self.hazards.clear()

    def check_engine(self, what: str) -> None:
        """Fail unless the engine is alive, hearing and speaking, no hazard was recorded (by the mock or
        by :func:`extra_hazards`) and nothing was logged at ERROR."""
        assert self.server is not None
        mock = self.server.mock

        def read() -> tuple[list[dict[str, Any]], Any, bool, bool]:
            core = mock.core
            return mock.log.named("hazard"), core.death, core.input_dead, core.output_dead

        hazards, death, deaf, mute = self.call(read)
        assert not hazards, f"{what}: the engine recorded hazards {hazards}"
        assert death is None and not deaf and not mute, (
            f"{what}: engine death={death} deaf={deaf} mute={mute}"
        )
        assert not self.hazards, f"{what}: engine-killing ADD: {self.hazards}"
        assert not self.errors.records, f"{what}: server logged errors:\n" + "\n".join(self.errors.records)


@contextmanager
def fuzz_server(frontend: dict[str, Any] | None = None, **mock: Any) -> Iterator[ThreadedServer]:
    """A started :class:`ThreadedServer` whose mock's ADD decoder also runs :func:`extra_hazards`."""
    with pytest.MonkeyPatch.context() as patch:
        original = mock_core.decode_add
        server = ThreadedServer(frontend, **mock)

        def decode(payload: bytes) -> Any:
            req = original(payload)
            server.hazards += [f"{req.request_id}: {p}" for p in extra_hazards(req)]
            return req

        patch.setattr(mock_core, "decode_add", decode)
        server.start()
        try:
            yield server
        finally:
            server.close()
            for endpoint, outcomes in sorted(server.tally.items()):
                print(f"fuzz {endpoint}: {sum(outcomes.values())} examples {dict(outcomes.most_common())}")


# ------------------------------------------------------------------------------------- strategies


class Raw:
    """A JSON token that :func:`dumps` writes verbatim (what ``json`` cannot produce: ``1e400``, a lone
    surrogate escape, 10^4-deep nesting)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


DEEP = 10_000
RAW_TOKENS = [
    Raw("1e400"),
    Raw("-1e400"),
    Raw("1e-400"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw('"\\ud800"'),
    Raw('"a\\udfffb"'),
    Raw('"\\ud83d"'),
    Raw("[" * DEEP + "]" * DEEP),
    Raw('{"a":' * DEEP + "1" + "}" * DEEP),
    Raw("18446744073709551616"),
    Raw("-9223372036854775809"),
    Raw("123456789012345678901234567890"),
    Raw("0.1e-999999"),
    Raw("-0"),
]

_ints = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**31)]),
    st.integers(-(2**63), 2**64 - 1),
)
_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, -1e308, 2.0000001, 1e-5, 0.99999]),
)
_strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "\u2028", "null", "true", "0", "-1", "user", "system", "auto", "none"]),
    st.sampled_from(["a" * 2**20, "\U0001f600" * 50_000, "<|im_start|>" * 2000]),
)
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), _ints, _floats, _strings, st.sampled_from(RAW_TOKENS)
)
#: values of the right shape at the edges the engine cares about: token ids around the vocabulary's ends,
#: logit_bias maps keyed by such ids, logprob counts around max_logprobs, probabilities around [0, 1]
_EDGE_IDS = st.sampled_from([-1, 0, 1, VOCAB - 1, VOCAB, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)])
EDGES: st.SearchStrategy[Any] = st.one_of(
    st.lists(_EDGE_IDS, min_size=1, max_size=3),
    st.dictionaries(
        _EDGE_IDS.map(str), st.one_of(_floats, st.sampled_from(RAW_TOKENS[:6])), min_size=1, max_size=2
    ),
    st.sampled_from([MAX_LOGPROBS, MAX_LOGPROBS + 1, -1, -2, 16384, 16385, 511, 512, 513]),
    st.sampled_from([0.0, 1.0, 1.0000001, -0.0000001, 2.0, 2.0000001, -2.0000001, 1e-10]),
    st.lists(st.sampled_from(["", " ", "a", "\x00"]), min_size=1, max_size=2),
)
HOSTILE: st.SearchStrategy[Any] = st.one_of(
    SCALARS,
    EDGES,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(
        st.one_of(st.text(max_size=6), st.sampled_from(["type", "text", "role"])), SCALARS, max_size=3
    ),
    st.sampled_from([[], {}, [[]], [{}], [None], {"": None}, list(range(5000)), [2**64 - 1] * 3]),
)


def dumps(value: Any) -> str:
    """JSON text of *value*, :class:`Raw` tokens verbatim, big ints and NaN/Infinity as written by Python."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node of a JSON tree, as a path of keys/indices (the root is ``()``)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def _replace(tree: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: _replace(tree[head], rest, new)}
    copy = list(tree)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _delete(tree: Any, path: tuple[Any, ...]) -> Any:
    head, rest = path[0], path[1:]
    if rest:
        return _replace(tree, (head,), _delete(tree[head], rest))
    if isinstance(tree, dict):
        return {k: v for k, v in tree.items() if k != head}
    return [v for i, v in enumerate(tree) if i != head]


@st.composite
def mutated_tree(draw: st.DrawFn, base: Any, field_names: list[str]) -> Any:
    """*base* with one to three nodes replaced by hostile values, deleted, or fields added/overwritten."""
    tree = base
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["replace", "replace", "replace", "field", "delete"]))
        if how == "field" and isinstance(tree, dict):
            tree = {**tree, draw(st.sampled_from(field_names)): draw(HOSTILE)}
            continue
        nodes = [p for p in paths(tree) if p or how == "replace"]
        if not nodes:
            continue
        path = draw(st.sampled_from(nodes))
        if how == "delete" and path:
            tree = _delete(tree, path)
        elif path or draw(st.integers(0, 9)) == 0:  # the root itself only now and then
            tree = _replace(tree, path, draw(HOSTILE))
    return tree


@st.composite
def encoded(draw: st.DrawFn, tree: Any, field_names: list[str]) -> bytes:
    """*tree* as a request body, sometimes with a duplicated key, cut short, a BOM or invalid UTF-8."""
    text = dumps(tree)
    if isinstance(tree, dict) and draw(st.integers(0, 5)) == 0:
        # a duplicate key whose *last* occurrence is hostile (JSON parsers keep the last)
        key = draw(st.sampled_from(list(tree) or field_names))
        text = text[:-1] + ("," if tree else "") + f"{json.dumps(key)}:{dumps(draw(HOSTILE))}" + "}"
    body = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 12 + ["cut", "bom", "bad_utf8", "overlong", "nul"]))
    if damage == "cut" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif damage == "bom":
        body = b"\xef\xbb\xbf" + body
    elif damage in ("bad_utf8", "overlong", "nul"):
        junk = {"bad_utf8": b"\xff\xfe", "overlong": b"\xc0\xaf", "nul": b"\x00"}[damage]
        at = draw(st.integers(0, len(body)))
        body = body[:at] + junk + body[at:]
    return body


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json",
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/json\x7f",
        ";;;",
    ]
)


@st.composite
def hostile_body(draw: st.DrawFn, bases: list[Any], field_names: list[str]) -> tuple[bytes, str | None]:
    """A request body (bytes) derived from one of *bases*, and a Content-Type header (``None``: absent)."""
    base = draw(st.sampled_from(bases))
    mode = draw(st.sampled_from(["mutated"] * 8 + ["raw"]))
    if mode == "raw":
        body = draw(
            st.sampled_from(
                [
                    b"",
                    b"null",
                    b"[]",
                    b'"x"',
                    b"1",
                    b"{",
                    b"}",
                    b"{}",
                    b"\xff",
                    b"NaN",
                    b"[" * DEEP,
                    b" " * 10_000,
                ]
            )
        )
    else:
        body = draw(encoded(draw(mutated_tree(base, field_names)), field_names))
    return body, draw(CONTENT_TYPES)


def describe(body: bytes) -> str:
    """A short printable form of a body, for failure messages."""
    text = body[:300].decode("utf-8", "backslashreplace")
    return text + (f"... ({len(body)} bytes)" if len(body) > 300 else "")
