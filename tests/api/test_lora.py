"""LoRA adapters on the mock engine: ``--lora-modules``, routing by ``model``, ``/v1/models``, the runtime
load/unload endpoints (vLLM's checks, statuses and bodies), start-up failures, and the mock's own LoRA
utilities (an adapter ``add_lora`` never accepted kills it, as it would the real engine)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from trio_front import cli
from trio_front.api.lora import ENV
from trio_front.engine import wire
from trio_front.engine.client import EngineDeadError, UtilityCallError
from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, serve_frontend
from trio_front.serving.lora import LoRAModule, parse_lora_modules

from .conftest import MODEL, Server, engine_ipc_addr, free_port, start_server
from .ws_fixtures import open_client

BASE = MODEL.name  # the served model name


def adapter_dir(root: Path, name: str) -> Path:
    """What the mock needs to accept an adapter: a directory holding ``adapter_config.json``."""
    path = root / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return path


async def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post(path, json=body)


async def lora_server(
    nursery: trio.Nursery, *modules: str, runtime: bool = False, enable_lora: bool = True, **mock: Any
) -> Server:
    """A server whose ``--lora-modules`` are loaded (``serve_frontend`` does that once the engine is ready;
    ``start_server`` builds the app without it, so the fixture does it here)."""
    server = await start_server(nursery, frontend={"lora_modules": modules}, enable_lora=enable_lora, **mock)
    await server.app.state.lora.load_static()
    return server


@pytest.fixture(autouse=True)
def no_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def runtime_env(no_runtime_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1")


@pytest.fixture
async def adapters(tmp_path: Path) -> AsyncIterator[tuple[Server, Path, Path]]:
    """A server with two static adapters, ``sql`` (JSON syntax) and ``chat`` (``name=path``)."""
    sql, chat = adapter_dir(tmp_path, "sql"), adapter_dir(tmp_path, "chat")
    async with trio.open_nursery() as nursery:
        server = await lora_server(
            nursery, json.dumps({"name": "sql", "path": str(sql), "base_model_name": BASE}), f"chat={chat}"
        )
        yield server, sql, chat
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------- --lora-modules syntax


def test_lora_modules_both_syntaxes() -> None:
    assert parse_lora_modules(["a=/x/y", "", '{"name": "b", "path": "/p", "base_model_name": "m"}']) == [
        LoRAModule("a", "/x/y"),
        LoRAModule("b", "/p", "m"),
    ]
    # '=' with ',' is JSON to vLLM, so a comma in a name=path item is a JSON error
    with pytest.raises(ValueError, match="Invalid JSON format for --lora-modules"):
        parse_lora_modules(["a=/x,y"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("{not json", "Invalid JSON format for --lora-modules"),
        ('{"name": "a"}', "Invalid fields for --lora-modules.*missing"),
        ('{"name": "a", "path": "/p", "rank": 8}', "Invalid fields for --lora-modules.*unknown"),
        ('{"name": "a", "path": 3}', "Invalid fields for --lora-modules.*path"),
        ('[{"name": "a", "path": "/p"}]', "Invalid fields for --lora-modules"),
        ("a=", "--lora-modules.*a name and a path"),
    ],
)
def test_bad_lora_modules_stop_start_up_naming_the_flag(
    item: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", str(MODEL), "--lora-modules", item])
    assert info.value.code != 0
    assert "--lora-modules" in str(info.value.code)
    with pytest.raises(ValueError, match=message):
        parse_lora_modules([item])


def test_lora_modules_duplicate_and_base_name_refused() -> None:
    argv = ["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", str(MODEL), "--lora-modules"]
    with pytest.raises(SystemExit, match="twice"):
        cli.main([*argv, "a=/p", "a=/q"])
    with pytest.raises(SystemExit, match="served model"):
        cli.main([*argv, f"{BASE}=/p"])


def test_runtime_updating_refused_with_several_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "true")
    with pytest.raises(SystemExit, match=f"{ENV} cannot be used with --workers > 1"):
        cli.main(["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", str(MODEL), "--workers", "2"])


# ---------------------------------------------------------------------------------- routing and models


async def test_models_lists_adapters_as_vllm_cards(adapters: tuple[Server, Path, Path]) -> None:
    server, sql, chat = adapters
    async with httpx.AsyncClient(base_url=server.url) as client:
        data = (await client.get("/v1/models")).json()["data"]
    assert [card["id"] for card in data] == [BASE, "sql", "chat"]
    cards = {card["id"]: card for card in data}
    assert cards["sql"]["root"] == str(sql) and cards["chat"]["root"] == str(chat)
    assert cards["sql"]["parent"] == BASE and cards["chat"]["parent"] == BASE
    assert cards["sql"]["object"] == "model" and cards["sql"]["permission"][0]["object"] == "model_permission"
    # ids from 1 in --lora-modules order, as vLLM
    assert server.mock.core.loras == {
        1: wire.LoRARequest(lora_name="sql", lora_int_id=1, lora_path=str(sql), base_model_name=BASE),
        2: wire.LoRARequest(lora_name="chat", lora_int_id=2, lora_path=str(chat)),
    }


async def test_responses_route_the_adapter_and_name_it(adapters: tuple[Server, Path, Path]) -> None:
    server, sql, _ = adapters
    r = await post(server, "/v1/responses", {"model": "sql", "input": "hi", "max_output_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "sql"
    assert server.mock.log.named("add")[-1]["lora"] == ["sql", 1, str(sql)]
    r = await post(server, "/v1/responses", {"model": BASE, "input": "hi", "max_output_tokens": 3})
    assert r.status_code == 200, r.text
    assert "lora" not in server.mock.log.named("add")[-1]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/completions", {"prompt": "def f(", "max_tokens": 3}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    ],
)
async def test_completions_and_chat_route_the_adapter(
    adapters: tuple[Server, Path, Path], path: str, body: dict[str, Any]
) -> None:
    server, _, chat = adapters
    r = await post(server, path, {**body, "model": "chat"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "chat"
    assert server.mock.log.named("add")[-1]["lora"] == ["chat", 2, str(chat)]
    r = await post(server, path, {**body, "model": BASE})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == BASE and "lora" not in server.mock.log.named("add")[-1]
    assert not server.mock.log.named("hazard")


async def test_unknown_model_is_404_and_reaches_no_engine(adapters: tuple[Server, Path, Path]) -> None:
    server, _, _ = adapters
    for path, body in (
        ("/v1/completions", {"prompt": "x", "max_tokens": 2}),
        ("/v1/responses", {"input": "x", "max_output_tokens": 2}),
    ):
        r = await post(server, path, {**body, "model": "nope"})
        assert r.status_code == 404, r.text
        assert (
            r.json()["error"]["param"] == "model" and "`nope` does not exist" in r.json()["error"]["message"]
        )
    assert not server.mock.log.named("add")


async def test_realtime_refuses_an_adapter_rather_than_serve_the_base_model(
    adapters: tuple[Server, Path, Path],
) -> None:
    server, _, _ = adapters
    ws = f"ws://127.0.0.1:{server.port}/v1/realtime"
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with open_client(f"{ws}?model=sql"):
            pass
    assert info.value.status_code == 400
    async with open_client(f"{ws}?model={BASE}") as conn:
        created = json.loads(await conn.get_message())
        assert created["type"] == "session.created"
        await conn.send_message(json.dumps({"type": "session.update", "session": {"model": "sql"}}))
        error = json.loads(await conn.get_message())
    assert error["type"] == "error" and error["error"]["param"] == "session.model"
    assert "LoRA" in error["error"]["message"]


async def test_a_pending_static_adapter_is_503_not_404(tmp_path: Path) -> None:
    path = adapter_dir(tmp_path, "sql")
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"lora_modules": (f"sql={path}",)}, enable_lora=True)
        r = await post(server, "/v1/responses", {"model": "sql", "input": "x", "max_output_tokens": 2})
        assert r.status_code == 503 and "still loading" in r.json()["error"]["message"]
        async with httpx.AsyncClient(base_url=server.url) as client:
            health = await client.get("/health")  # not up for a load balancer until adapters are in
            assert health.status_code == 503 and "sql" in health.json()["detail"]
            await server.app.state.lora.load_static()
            assert (await client.get("/health")).status_code == 200
        r = await post(server, "/v1/responses", {"model": "sql", "input": "x", "max_output_tokens": 2})
        assert r.status_code == 200, r.text
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------- runtime endpoints


async def test_endpoints_absent_without_the_env_var(adapters: tuple[Server, Path, Path], tmp_path) -> None:
    server, _, _ = adapters
    r = await post(server, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)})
    assert r.status_code == 404
    r = await post(server, "/v1/unload_lora_adapter", {"lora_name": "sql"})
    assert r.status_code == 404
    assert "sql" in server.app.state.lora.adapters


async def test_load_use_and_unload(runtime_env: None, tmp_path: Path) -> None:
    path = adapter_dir(tmp_path, "new")
    async with trio.open_nursery() as nursery:
        server = await lora_server(nursery)
        r = await post(server, "/v1/load_lora_adapter", {"lora_name": "new", "lora_path": str(path)})
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'new' added successfully."
        assert r.headers["content-type"].startswith("text/plain")
        r = await post(server, "/v1/responses", {"model": "new", "input": "x", "max_output_tokens": 2})
        assert r.status_code == 200, r.text
        assert server.mock.log.named("add")[-1]["lora"] == ["new", 1, str(path)]

        # a second load of the name: 400 unless in place; in place keeps the id and reloads the engine's copy
        r = await post(server, "/v1/load_lora_adapter", {"lora_name": "new", "lora_path": str(path)})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == (
            "The lora adapter 'new' has already been loaded. If you want to load the adapter in place, set "
            "'load_inplace' to True."
        )
        added = len(server.mock.log.named("lora_added"))
        r = await post(
            server,
            "/v1/load_lora_adapter",
            {"lora_name": "new", "lora_path": str(path), "load_inplace": True},
        )
        assert r.status_code == 200, r.text
        assert len(server.mock.log.named("lora_added")) == added + 1
        assert server.app.state.lora.resolve("new").lora_int_id == 1
        # requests never carry load_inplace (the mock would die: hazard)
        r = await post(server, "/v1/responses", {"model": "new", "input": "x", "max_output_tokens": 2})
        assert r.status_code == 200, r.text

        r = await post(server, "/v1/unload_lora_adapter", {"lora_name": "new", "lora_int_id": 7})
        assert r.status_code == 400 and r.json()["error"]["param"] is None
        r = await post(server, "/v1/unload_lora_adapter", {"lora_name": "new"})
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'new' removed successfully."
        r = await post(server, "/v1/responses", {"model": "new", "input": "x", "max_output_tokens": 2})
        assert r.status_code == 404
        # vLLM 0.32 leaves the engine's copy to its LRU cache; a reload gets a fresh id
        assert 1 in server.mock.core.loras
        r = await post(server, "/v1/load_lora_adapter", {"lora_name": "new", "lora_path": str(path)})
        assert r.status_code == 200
        assert server.app.state.lora.resolve("new").lora_int_id == 2
        assert not server.mock.log.named("hazard")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"lora_name": "", "lora_path": "/p"}, 400, "Both 'lora_name' and 'lora_path' must be provided."),
        ({"lora_name": "x", "lora_path": ""}, 400, "Both 'lora_name' and 'lora_path' must be provided."),
        ({"lora_name": BASE, "lora_path": "/p"}, 400, f"The lora adapter '{BASE}' conflicts with a served"),
        ({"lora_name": "x"}, 400, "invalid request"),
        ({"lora_name": "x", "lora_path": 5}, 400, "invalid request"),
        # vLLM's LoRAAdapterNotFoundError text, with the path sanitized as vLLM does
        ({"lora_name": "x", "lora_path": "/tmp/no/such"}, 404,
         "Loading lora x failed: No adapter found for <path>"),
    ],
)  # fmt: skip
async def test_load_refusals(runtime_env: None, body: dict[str, Any], status: int, message: str) -> None:
    async with trio.open_nursery() as nursery:
        server = await lora_server(nursery)
        r = await post(server, "/v1/load_lora_adapter", body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["message"].startswith(message) and error["code"] == status
        assert not server.app.state.lora.adapters
        nursery.cancel_scope.cancel()


async def test_load_on_an_engine_without_lora_is_500(runtime_env: None, tmp_path: Path) -> None:
    path = adapter_dir(tmp_path, "x")
    async with trio.open_nursery() as nursery:
        server = await lora_server(nursery, enable_lora=False)
        r = await post(server, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(path)})
        assert r.status_code == 500
        assert "LoRA is not enabled. Use --enable-lora" in r.json()["error"]["message"]
        assert not server.app.state.lora.adapters
        nursery.cancel_scope.cancel()


async def test_unload_refusals(runtime_env: None, adapters: tuple[Server, Path, Path]) -> None:
    server, _, _ = adapters
    r = await post(server, "/v1/unload_lora_adapter", {"lora_name": ""})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "'lora_name' needs to be provided to unload a LoRA adapter."
    r = await post(server, "/v1/unload_lora_adapter", {"lora_name": "nope"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "The lora adapter 'nope' cannot be found."
    assert r.json()["error"]["type"] == "NotFoundError"


# ---------------------------------------------------------------------------------- start-up


async def _serve(config: FrontendConfig, enable_lora: bool, want: list[str] | None) -> BaseException | None:
    """Run ``serve_frontend`` (with its own start-up loading) on a mock. With *want*, stop it once
    ``/v1/models`` lists those ids; otherwise wait for it to end. Returns the ``SystemExit`` it raised."""
    outcome: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_mock_engine, MockEngineConfig(config.engine_addr, step_ms=2, enable_lora=enable_lora)
        )

        async def run() -> None:
            nonlocal outcome
            try:
                await serve_frontend(config)
            except SystemExit as exc:  # to look at
                outcome = exc
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        with trio.fail_after(20):
            if want is None:
                await trio.sleep_forever()  # run() cancels
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}") as client:
                while True:
                    try:
                        ids = [c["id"] for c in (await client.get("/v1/models")).json()["data"]]
                    except httpx.HTTPError:
                        ids = []
                    if ids == want:
                        nursery.cancel_scope.cancel()
                        break
                    await trio.sleep(0.05)
    return outcome


def _config(*modules: str) -> FrontendConfig:
    return FrontendConfig(
        engine_addr=engine_ipc_addr(), model=MODEL, port=free_port(), ping_interval=0, lora_modules=modules
    )


async def test_serve_frontend_loads_lora_modules_once_the_engine_is_ready(tmp_path: Path) -> None:
    path = adapter_dir(tmp_path, "sql")
    assert await _serve(_config(f"sql={path}"), enable_lora=True, want=[BASE, "sql"]) is None


@pytest.mark.parametrize("enable_lora", [True, False])
async def test_a_static_adapter_that_fails_stops_the_server_non_zero(
    tmp_path: Path, enable_lora: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = adapter_dir(tmp_path, "ok")
    modules = (f"ok={path}", f"bad={tmp_path / 'missing'}")
    outcome = await _serve(_config(*modules), enable_lora=enable_lora, want=None)
    assert isinstance(outcome, SystemExit) and outcome.code == 1
    expected = "No adapter found" if enable_lora else "start the engine with --enable-lora"
    assert expected in caplog.text and "--lora-modules" in caplog.text


# ---------------------------------------------------------------------------------- the mock's utilities


async def test_mock_lora_utilities_and_the_unknown_adapter_hazard(tmp_path: Path) -> None:
    path = str(adapter_dir(tmp_path, "a"))
    async with trio.open_nursery() as nursery:
        server = await lora_server(nursery)
        engine = server.app.engine
        lora = wire.LoRARequest(lora_name="a", lora_int_id=5, lora_path=path)
        assert await engine.call_utility("add_lora", lora) is True
        assert await engine.call_utility("add_lora", lora) is False  # already there, not in place
        assert await engine.call_utility("list_loras") == [5]
        assert await engine.call_utility("pin_lora", 5) is True
        with pytest.raises(UtilityCallError, match="Pinning failed. LoRA 6 is not registered."):
            await engine.call_utility("pin_lora", 6)
        with pytest.raises(UtilityCallError, match="Call to add_lora method failed: id must be > 0"):
            await engine.call_utility(
                "add_lora", wire.LoRARequest(lora_name="z", lora_int_id=0, lora_path=path)
            )
        assert await engine.call_utility("remove_lora", 5) is True
        assert await engine.call_utility("remove_lora", 5) is False
        assert await engine.call_utility("list_loras") == []
        # a request naming an adapter the engine does not hold: the real engine would die loading it
        async with engine.generate(
            [1, 50, 60], wire.SamplingParams(max_tokens=2), lora_request=lora
        ) as stream:
            with trio.fail_after(5):
                with pytest.raises(EngineDeadError):
                    async for _ in stream:
                        pass
        assert server.mock.log.named("hazard")[-1]["kind"] == "unknown_lora"
        nursery.cancel_scope.cancel()
