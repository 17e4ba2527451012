"""The HTTP/WebSocket layers (``api/middleware/``) against the mock engine, in-process under hypercorn:
API keys on every guarded route (HTTP and both WebSockets, the SDK's clients and the browser subprotocol),
CORS, ``X-Request-Id``, the access log, the header-count limit and ``root_path``; and parity with vLLM's
own middleware (``security_oracle.py``, in the engine venv) message for message."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
import trio_websocket
import websockets.exceptions
from openai import OpenAI

from tests.vllm_oracle import run_in_engine_venv
from trio_front.api import direct_body, disconnect
from trio_front.api.middleware import HTTPOptions, auth, wrap
from trio_front.api.middleware.root_path import RootPath
from trio_front.api.ws.socket import select_subprotocol
from trio_front.engine.mock import eos_seed

from .conftest import Server, start_server
from .ws_fixtures import WSServer, open_client, running_server

MODEL = "tiny-llama"
KEYS = ("key-one", "key-two", "key-three")
ORACLE = Path(__file__).with_name("security_oracle.py")


@pytest.fixture
async def keyed() -> AsyncIterator[Server]:
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, frontend={"api_keys": KEYS, "enable_scale_out": True})
        nursery.cancel_scope.cancel()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unauthorized(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "AuthenticationError" and body["code"] == 401
    return body


#: every guarded HTTP route: (method, path, body)
GUARDED = [
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ),
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 2}),
    ("POST", "/tokenize", {"model": MODEL, "prompt": "hi"}),
    ("POST", "/detokenize", {"model": MODEL, "tokens": [1, 2]}),
    ("POST", "/inference/v1/generate", {"token_ids": [1, 5], "sampling_params": {"max_tokens": 2}}),
    ("POST", "/v1/completions/render", {"model": MODEL, "prompt": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MODEL}", None),
]
OPEN = ["/health", "/ping", "/version", "/metrics", "/load"]


async def test_every_guarded_route_needs_a_key_and_nothing_reaches_the_engine(keyed: Server) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=10) as http:
        for method, path, body in GUARDED:
            for headers in ({}, bearer("wrong"), {"Authorization": "Basic key-one"}, {"X-Api-Key": KEYS[0]}):
                r = await http.request(method, path, json=body, headers=headers)
                message = unauthorized(r)["message"]
                assert ("incorrect" in message) == (headers == bearer("wrong")), (path, headers, message)
        assert keyed.adds() == [] and keyed.app.engine.open_requests == 0
        for method, path, body in GUARDED:
            r = await http.request(method, path, json=body, headers=bearer(KEYS[1]))
            assert r.status_code == 200, (path, r.text)
        assert len(keyed.adds()) == 4  # completions, chat, responses, generate


async def test_open_routes_stay_open(keyed: Server) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=10) as http:
        for path in OPEN:
            r = await http.get(path)
            assert r.status_code == 200, (path, r.text)
        assert (await http.post("/ping")).status_code == 200
        # unknown paths outside the guarded prefixes are the router's business (404), not the key's
        assert (await http.get("/nothing")).status_code == 404
        # inside a guarded prefix even an unknown path needs the key first (vLLM's prefix test)
        unauthorized(await http.get("/v1/nothing"))
        assert (await http.get("/v1/nothing", headers=bearer(KEYS[0]))).status_code == 404


async def test_each_key_works_and_the_scheme_is_case_insensitive(keyed: Server) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=10) as http:
        for key in KEYS:
            assert (await http.get("/v1/models", headers=bearer(key))).status_code == 200
        for value in ("bearer key-one", "BEARER key-two", "BeArEr key-three"):
            assert (await http.get("/v1/models", headers={"Authorization": value})).status_code == 200
        # vLLM's parsing: split at the first space, nothing stripped (h11 refuses trailing blanks itself)
        for value in (
            "Bearer",
            "Bearer  key-one",
            "Bearer\tkey-one",
            "Bearerkey-one",
            "key-one",
            "Bearer key-on",
        ):
            unauthorized(await http.get("/v1/models", headers={"Authorization": value}))


async def test_options_is_not_guarded(keyed: Server) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=10) as http:
        r = await http.options("/v1/completions")
        assert r.status_code == 405  # the router's answer: the key layer let it through
        r = await http.options(
            "/v1/completions",
            headers={"Origin": "https://x.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 400 and r.text == "Disallowed CORS origin"  # no origin is allowed by default


def sdk_calls(url: str) -> dict[str, Any]:
    """Runs in a worker thread: the unmodified sync SDK with a wrong and with a right key."""
    out: dict[str, Any] = {}
    wrong = OpenAI(api_key="wrong", base_url=f"{url}/v1", max_retries=0)
    try:
        wrong.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    except openai.AuthenticationError as exc:
        out["error"] = (exc.status_code, exc.message)
    right = OpenAI(api_key=KEYS[2], base_url=f"{url}/v1", max_retries=0)
    out["text"] = right.completions.create(model=MODEL, prompt="hi", max_tokens=2).choices[0].text
    out["models"] = [m.id for m in right.models.list()]
    return out


async def test_sdk_raises_authentication_error_and_works_with_the_key(keyed: Server) -> None:
    out = await trio.to_thread.run_sync(sdk_calls, keyed.url)
    status, message = out["error"]
    assert status == 401 and "incorrect API key" in message
    assert out["text"] and out["models"] == [MODEL]


def test_every_key_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison does not stop at the first matching key (nor at the first failing one)."""
    compared: list[tuple[bytes, bytes]] = []
    real = auth.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth, "compare_digest", counting)
    layer = auth.Auth(None, KEYS)
    for token, expected in ((KEYS[0], True), (KEYS[2], True), ("nope", False), ("", False)):
        compared.clear()
        assert layer.matches(token) is expected
        assert [b for _, b in compared] == layer.digests  # all three, in order
        assert all(len(a) == 32 for a, _ in compared)  # digests: the key's length does not matter


# ---------------------------------------------------------------------------------------------- WebSockets


def sdk_realtime(server: WSServer, key: str) -> Any:
    client = OpenAI(api_key=key, base_url=f"{server.http_url}/v1", websocket_base_url=f"{server.ws_url}/v1")
    try:
        with client.realtime.connect(model=MODEL) as conn:
            return conn.recv().type
    except websockets.exceptions.InvalidStatus as exc:
        return exc.response.status_code


def sdk_responses_ws(server: WSServer, key: str) -> Any:
    client = OpenAI(api_key=key, base_url=f"{server.http_url}/v1", websocket_base_url=f"{server.ws_url}/v1")
    try:
        with client.responses.connect() as conn:
            conn.send({"type": "response.create", "model": MODEL, "input": "hi", "seed": eos_seed(2)})
            for event in conn:
                if event.type in ("response.completed", "response.incomplete", "response.failed", "error"):
                    return event.type
    except websockets.exceptions.InvalidStatus as exc:  # what the SDK raises for a refused upgrade
        return exc.response.status_code
    return None


async def test_sdk_websockets_need_the_key() -> None:
    async with running_server(frontend={"api_keys": KEYS}) as server:
        assert await trio.to_thread.run_sync(sdk_realtime, server, "wrong") == 401
        assert await trio.to_thread.run_sync(sdk_responses_ws, server, "wrong") == 401
        assert server.stats.sockets_total == 0 and server.adds() == []
        assert await trio.to_thread.run_sync(sdk_realtime, server, KEYS[0]) == "session.created"
        assert await trio.to_thread.run_sync(sdk_responses_ws, server, KEYS[1]) == "response.completed"
        assert server.stats.sockets_total == 2


async def test_browser_subprotocol_carries_the_key() -> None:
    async with running_server(frontend={"api_keys": KEYS}) as server:
        url = f"{server.ws_url}/v1/realtime?model={MODEL}"
        for protocols in (
            ["realtime", "openai-insecure-api-key.wrong"],
            ["realtime"],
            ["openai-insecure-api-key."],
            [f"openai-insecure-api-key-{KEYS[0]}"],
        ):
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with open_client(url, subprotocols=protocols):
                    pass
            assert info.value.status_code == 401, protocols
            assert b'"AuthenticationError"' in (info.value.body or b"")
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with open_client(f"{server.ws_url}/v1/responses", extra_headers=[(b"authorization", b"x")]):
                pass
        assert info.value.status_code == 401
        assert server.stats.sockets_total == 0

        protocols = ["realtime", f"openai-insecure-api-key.{KEYS[2]}", "openai-beta.realtime-v1"]
        async with open_client(url, subprotocols=protocols) as conn:
            assert conn.subprotocol == "realtime"  # never the key-carrying one
            with trio.fail_after(10):
                created = json.loads(await conn.get_message())
            # the browser's way to ask for the beta dialect (it cannot send the OpenAI-Beta header)
            assert created["type"] == "session.created" and "modalities" in created["session"], created
        # the header works on a raw client as well, and a socket with no subprotocol offered gets none
        async with open_client(url, extra_headers=[(b"authorization", f"bearer {KEYS[1]}".encode())]) as conn:
            assert conn.subprotocol is None
            with trio.fail_after(10):
                created = json.loads(await conn.get_message())
            assert "output_modalities" in created["session"], created  # GA unless asked


def test_subprotocol_selection() -> None:
    assert select_subprotocol(["openai-insecure-api-key.k", "realtime"]) == "realtime"
    assert select_subprotocol(["openai-insecure-api-key.k"]) is None
    assert select_subprotocol([]) is None


# ---------------------------------------------------------------------------------------------- CORS


async def test_cors_preflight_and_simple_requests() -> None:
    frontend = {
        "allowed_origins": ("https://app.example",),
        "allow_credentials": True,
        "api_keys": KEYS,
    }
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend=frontend)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            ok = await http.options(
                "/v1/chat/completions",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            assert ok.status_code == 200 and ok.text == "OK"
            assert ok.headers["access-control-allow-origin"] == "https://app.example"
            assert ok.headers["access-control-allow-credentials"] == "true"
            assert ok.headers["access-control-allow-headers"] == "authorization, content-type"
            assert "POST" in ok.headers["access-control-allow-methods"]
            assert ok.headers["access-control-max-age"] == "600"
            denied = await http.options(
                "/v1/chat/completions",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert denied.status_code == 400 and denied.text == "Disallowed CORS origin"
            assert "access-control-allow-origin" not in denied.headers

            simple = await http.get(
                "/v1/models", headers={"Origin": "https://app.example", **bearer(KEYS[0])}
            )
            assert simple.headers["access-control-allow-origin"] == "https://app.example"
            assert simple.headers["access-control-allow-credentials"] == "true"
            assert simple.headers["vary"] == "Origin"
            other = await http.get(
                "/v1/models", headers={"Origin": "https://evil.example", **bearer(KEYS[0])}
            )
            assert "access-control-allow-origin" not in other.headers
            # unlike vLLM, a 401 carries the CORS headers, so the allowed page can read it
            refused = await http.get("/v1/models", headers={"Origin": "https://app.example"})
            unauthorized(refused)
            assert refused.headers["access-control-allow-origin"] == "https://app.example"
            # streamed responses get them too (the headers are set at the response's start)
            async with http.stream(
                "POST",
                "/v1/completions",
                json={"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": True},
                headers={"Origin": "https://app.example", **bearer(KEYS[0])},
            ) as stream:
                assert stream.headers["access-control-allow-origin"] == "https://app.example"
                assert stream.headers["content-type"] == "text/event-stream"
                assert "[DONE]" in "".join([chunk async for chunk in stream.aiter_text()])
        nursery.cancel_scope.cancel()


async def test_cors_wildcard_without_and_with_credentials() -> None:
    for credentials, expected in ((False, "*"), (True, "https://any.example")):
        async with trio.open_nursery() as nursery:
            server = await start_server(
                nursery, frontend={"allowed_origins": ("*",), "allow_credentials": credentials}
            )
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                r = await http.get("/v1/models", headers={"Origin": "https://any.example"})
                assert r.headers["access-control-allow-origin"] == expected
                assert ("access-control-allow-credentials" in r.headers) is credentials
                pre = await http.options(
                    "/v1/models",
                    headers={"Origin": "https://any.example", "Access-Control-Request-Method": "GET"},
                )
                assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == expected
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------- parity


def _parity_cases() -> list[dict[str, Any]]:
    cors_flags = [
        {},
        {"allowed_origins": ["https://a.example"]},
        {"allowed_origins": ["*"]},
        {"allowed_origins": ["*"], "allow_credentials": True},
        {
            "allowed_origins": ["https://a.example"],
            "allow_credentials": True,
            "allowed_methods": ["GET", "POST"],
            "allowed_headers": ["Authorization", "X-Custom"],
        },
        {"allowed_origins": ["https://a.example"], "enable_request_id_headers": True},
    ]
    pre = [["access-control-request-method", "POST"]]
    requests = [
        ("OPTIONS", [["origin", "https://a.example"], *pre]),
        ("OPTIONS", [["origin", "https://b.example"], *pre]),
        ("OPTIONS", [["origin", "https://a.example"], ["access-control-request-method", "PUT"]]),
        ("OPTIONS", [["origin", "https://a.example"], *pre, ["access-control-request-headers", "X-Custom"]]),
        (
            "OPTIONS",
            [["origin", "https://a.example"], *pre, ["access-control-request-headers", "x-other, accept"]],
        ),
        (
            "OPTIONS",
            [["origin", "https://a.example"], *pre, ["access-control-request-private-network", "true"]],
        ),
        ("OPTIONS", [["origin", "https://a.example"]]),
        ("GET", [["origin", "https://a.example"]]),
        ("GET", [["origin", "https://b.example"]]),
        ("GET", []),
        ("POST", [["origin", "https://a.example"], ["x-request-id", "given-id"]]),
    ]
    cases = [
        {"flags": flags, "scope": {"type": "http", "method": m, "path": "/v1/models", "headers": h}}
        for flags in cors_flags
        for m, h in requests
    ]
    keyed = {"api_key": ["k1", "k2"], "enable_request_id_headers": True}
    for path in ("/v1/models", "/v1", "/v1x", "/v2/x", "/inference/v1/generate", "/cohere/v1/chat", "/health",
                 "/metrics", "/version", "/vx"):  # fmt: skip
        for authorization in (
            None,
            "Bearer k1",
            "bearer k2",
            "Bearer  k1",
            "Basic k1",
            "Bearer wrong",
            "Bearer",
        ):
            headers = [] if authorization is None else [["authorization", authorization]]
            cases.append(
                {"flags": keyed, "scope": {"type": "http", "method": "GET", "path": path, "headers": headers}}
            )
    cases.append(
        {"flags": keyed, "scope": {"type": "http", "method": "OPTIONS", "path": "/v1/models", "headers": []}}
    )
    for headers in ([], [["authorization", "Bearer k2"]], [["authorization", "Bearer no"]]):
        scope = {"type": "websocket", "path": "/v1/realtime", "headers": headers}
        cases.append({"flags": {"api_key": ["k1", "k2"]}, "scope": scope})
    return cases


async def _ours(case: dict[str, Any]) -> dict[str, Any]:
    flags = case["flags"]
    options = HTTPOptions(
        api_keys=flags.get("api_key") or (),
        allowed_origins=flags.get("allowed_origins", ()),
        allowed_methods=flags.get("allowed_methods", ("*",)),
        allowed_headers=flags.get("allowed_headers", ("*",)),
        allow_credentials=flags.get("allow_credentials", False),
        enable_request_id_headers=flags.get("enable_request_id_headers", False),
        access_log=False,
    )
    reached = False
    messages: list[dict[str, Any]] = []

    async def inner(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        nonlocal reached
        reached = True
        if scope["type"] == "http":
            headers = [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
        else:
            await receive()
            await send({"type": "websocket.accept"})

    raw = case["scope"]
    scope: dict[str, Any] = {
        "type": raw["type"],
        "path": raw["path"],
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw["headers"]],
        "client": ("127.0.0.1", 1234),
        "http_version": "1.1",
        "extensions": {"websocket.http.response": {}} if raw["type"] == "websocket" else {},
    }
    if raw["type"] == "http":
        scope["method"] = raw["method"]
    else:
        scope["subprotocols"] = raw.get("subprotocols", [])
    incoming = [
        {"type": "http.request", "body": b"", "more_body": False}
        if raw["type"] == "http"
        else {"type": "websocket.connect"}
    ]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        out: dict[str, Any] = {"type": message["type"]}
        if "status" in message:
            out["status"] = message["status"]
        if "headers" in message:
            out["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in message["headers"]]
        if "body" in message:
            out["body"] = bytes(message["body"]).decode("latin-1")
        messages.append(out)

    await wrap(inner, options)(scope, receive, send)
    return {"reached": reached, "messages": messages}


def _normalized(answer: dict[str, Any], request_headers: list[list[str]]) -> dict[str, Any]:
    """Generated request ids replaced by a marker (after checking they are uuid4 hex); a 401's headers and
    body set aside (they differ on purpose: our OpenAI-style body, and CORS outside the key check)."""
    given = any(k == "x-request-id" for k, _ in request_headers)
    messages = []
    refused = any(m.get("status") == 401 for m in answer["messages"])
    for message in answer["messages"]:
        message = dict(message)
        if "headers" in message:
            headers = []
            for name, value in message["headers"]:
                if name == "x-request-id" and not given:
                    assert re.fullmatch("[0-9a-f]{32}", value) and uuid.UUID(value).version == 4
                    value = "<generated>"
                headers.append([name, value])
            message["headers"] = [h for h in headers if h[0] == "x-request-id"] if refused else headers
        if refused:
            message.pop("body", None)
        messages.append(message)
    return {"reached": answer["reached"], "messages": messages}


def _difference_cases() -> list[dict[str, Any]]:
    flags = {"api_key": ["k1"]}
    cases = [
        {"flags": flags, "scope": {"type": "http", "method": "POST", "path": path, "headers": []}}
        for path in ("/tokenize", "/detokenize")
    ]
    ws = {
        "type": "websocket",
        "path": "/v1/realtime",
        "headers": [],
        "subprotocols": ["realtime", "openai-insecure-api-key.k1"],
    }
    cases.append({"flags": flags, "scope": ws})
    return cases


_ORACLE_ANSWERS: list[Any] = []


async def _vllm_answers() -> tuple[list[Any], list[Any]]:
    """vLLM's answers to the parity cases and to the difference cases (one engine-venv run per session)."""
    parity, differences = _parity_cases(), _difference_cases()
    if not _ORACLE_ANSWERS:
        cases = parity + differences
        answers = await trio.to_thread.run_sync(lambda: run_in_engine_venv([str(ORACLE)], {"cases": cases}))
        assert len(answers) == len(cases)
        _ORACLE_ANSWERS.extend(answers)
    return _ORACLE_ANSWERS[: len(parity)], _ORACLE_ANSWERS[len(parity) :]


async def test_parity_with_vllms_middleware() -> None:
    cases = _parity_cases()
    theirs, _ = await _vllm_answers()
    refusals = 0
    for case, their in zip(cases, theirs, strict=True):
        ours = await _ours(case)
        headers = case["scope"]["headers"]
        assert _normalized(ours, headers) == _normalized(their, headers), case
        refusals += not their["reached"]
    assert refusals > 40  # the cases do exercise refusals (401s, preflights), not only pass-throughs


async def test_tokenize_routes_and_the_subprotocol_are_where_we_differ_from_vllm() -> None:
    """Where we differ from vLLM on purpose: /tokenize and /detokenize need the key (vLLM leaves them
    open); a key in the browser subprotocol opens a WebSocket (vLLM ignores it and refuses the socket)."""
    cases = _difference_cases()
    _, theirs = await _vllm_answers()
    assert [t["reached"] for t in theirs] == [True, True, False]
    ours = [await _ours(case) for case in cases]
    assert [o["reached"] for o in ours] == [False, False, True]


# ---------------------------------------------------------------------------------------------- X-Request-Id


async def test_request_id_header_only_with_the_flag() -> None:
    for flag in (True, False):
        async with trio.open_nursery() as nursery:
            server = await start_server(
                nursery, frontend={"enable_request_id_headers": flag, "api_keys": KEYS}
            )
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                given = await http.get("/v1/models", headers={"X-Request-Id": "mine-1", **bearer(KEYS[0])})
                fresh = await http.get("/health")
                refused = await http.get("/v1/models")
                body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, "stream": True}
                async with http.stream(
                    "POST", "/v1/completions", json=body, headers=bearer(KEYS[0])
                ) as stream:
                    streamed = stream.headers.get("x-request-id")
                    await stream.aread()
            if flag:
                assert given.headers.get_list("x-request-id") == ["mine-1"]
                for value in (fresh.headers["x-request-id"], refused.headers["x-request-id"], streamed):
                    assert value is not None and uuid.UUID(hex=value).version == 4 and len(value) == 32
                assert fresh.headers["x-request-id"] != refused.headers["x-request-id"]
            else:
                assert "x-request-id" not in given.headers and "x-request-id" not in fresh.headers
                assert streamed is None
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------- access log


async def test_access_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_front.access")
    async with running_server(frontend={"api_keys": KEYS}) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            await http.post(
                "/v1/completions",
                json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                headers=bearer(KEYS[0]),
            )
            body = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": True}
            async with http.stream("POST", "/v1/completions?x=1", json=body, headers=bearer(KEYS[0])) as s:
                await s.aread()
            await http.get("/v1/models")
            await http.get("/no/such path")
        async with open_client(
            f"{server.ws_url}/v1/realtime?model={MODEL}",
            extra_headers=[(b"authorization", f"Bearer {KEYS[0]}".encode())],
        ) as conn:
            with trio.fail_after(10):
                await conn.get_message()
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with open_client(f"{server.ws_url}/v1/responses"):
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_front.access"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "trio_front.access")
    client = r"127\.0\.0\.1:\d+"
    expected = [
        rf'{client} - "POST /v1/completions HTTP/1.1" 200',
        rf'{client} - "POST /v1/completions\?x=1 HTTP/1.1" 200',
        rf'{client} - "GET /v1/models HTTP/1.1" 401',
        rf'{client} - "GET /no/such%20path HTTP/1.1" 404',
        rf'{client} - "WebSocket /v1/realtime\?model={MODEL}" \[accepted\]',
        rf'{client} - "WebSocket /v1/responses" 401',
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


async def test_access_log_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_front.access")
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"access_log": False})
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/v1/models")).status_code == 200
        nursery.cancel_scope.cancel()
    assert [r for r in caplog.records if r.name == "trio_front.access"] == []


async def test_layers_keep_the_fast_paths(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With every layer on (access log at INFO, CORS, request ids, keys), a streamed response is still
    written by the direct body writer and its disconnect is still seen without a watcher task: the layers'
    ``send`` wrappers keep hypercorn's stream reachable (``plumbing.rebind``)."""
    caplog.set_level(logging.INFO, logger="trio_front.access")
    writes: list[bytes] = []
    watchers: list[object] = []
    original_write = direct_body.DirectBody.write
    original_watcher = disconnect._run_with_watcher

    async def counting(self: direct_body.DirectBody, data: bytes) -> bool:
        writes.append(data)
        return await original_write(self, data)

    async def spy(*args: Any) -> bool:
        watchers.append(args)
        return await original_watcher(*args)

    monkeypatch.setattr(direct_body.DirectBody, "write", counting)
    monkeypatch.setattr(disconnect, "_run_with_watcher", spy)
    frontend = {
        "api_keys": KEYS,
        "allowed_origins": ("*",),
        "enable_request_id_headers": True,
        "root_path": "/prefix",
    }
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend=frontend)
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 8, "stream": True, "seed": 1}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            async with http.stream(
                "POST",
                "/prefix/v1/completions",
                json=body,
                headers={"Origin": "https://o", **bearer(KEYS[0])},
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["access-control-allow-origin"] == "*" and stream.headers["x-request-id"]
                await stream.aread()
        nursery.cancel_scope.cancel()
    assert writes and all(w.startswith(b"data: ") for w in writes)
    assert watchers == []
    assert any('"POST /prefix/v1/completions HTTP/1.1" 200' in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- limits, root


async def test_header_count_limit() -> None:
    async with running_server(frontend={"h11_max_header_count": 20}) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            # httpx itself sends host, accept, accept-encoding, connection, user-agent
            few = {f"x-h{i}": "v" for i in range(10)}
            many = {f"x-h{i}": "v" for i in range(16)}
            assert (await http.get("/v1/models", headers=few)).status_code == 200
            r = await http.get("/v1/models", headers=many)
            assert r.status_code == 431, r.text
            assert r.json()["error"]["code"] == 431 and "header" in r.json()["error"]["message"]
            body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, "seed": eos_seed(2)}
            assert (await http.post("/v1/completions", json=body, headers=many)).status_code == 431
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            headers = [(f"x-h{i}".encode(), b"v") for i in range(20)]
            async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}", extra_headers=headers):
                pass
        assert info.value.status_code == 431
        assert server.adds() == [] and server.stats.sockets_total == 0


def test_options_validation() -> None:
    assert HTTPOptions(root_path="/p/").root_path == "/p"
    assert HTTPOptions(root_path="").root_path is None
    assert HTTPOptions(api_keys=("", "k")).api_keys == ("k",)
    with pytest.raises(ValueError, match="root_path"):
        HTTPOptions(root_path="p")
    with pytest.raises(ValueError, match="h11_max_header_count"):
        HTTPOptions(h11_max_header_count=0)


async def test_root_path_routes_with_and_without_the_prefix() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"root_path": "/prefix", "api_keys": KEYS})
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for path in ("/prefix/v1/models", "/v1/models", f"/prefix/v1/models/{MODEL}"):
                assert (await http.get(path, headers=bearer(KEYS[0]))).status_code == 200, path
                unauthorized(await http.get(path))
            assert (await http.get("/prefix/health")).status_code == 200
            assert (await http.get("/prefixed/v1/models", headers=bearer(KEYS[0]))).status_code == 404
            r = await http.post(
                "/prefix/v1/completions",
                json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                headers=bearer(KEYS[0]),
            )
            assert r.status_code == 200, r.text
        nursery.cancel_scope.cancel()


async def test_root_path_scope() -> None:
    seen: list[tuple[str, str]] = []

    async def app(scope, _receive, _send) -> None:  # type: ignore[no-untyped-def]
        seen.append((scope["root_path"], scope["path"]))

    async def nothing() -> dict[str, Any]:
        raise AssertionError

    async def sink(_message: dict[str, Any]) -> None:
        raise AssertionError

    layer = RootPath(app, "/api")
    for path in ("/api/v1/models", "/v1/models", "/api", "/apix/v1"):
        await layer({"type": "http", "path": path, "root_path": ""}, nothing, sink)
    assert seen == [("/api", "/v1/models"), ("/api", "/v1/models"), ("/api", "/"), ("/api", "/apix/v1")]
    seen.clear()
    # without the flag, the server's own root_path (hypercorn's setting) is honoured alike
    await RootPath(app, None)(
        {"type": "websocket", "path": "/s/v1/realtime", "root_path": "/s"}, nothing, sink
    )
    assert seen == [("/s", "/v1/realtime")]
