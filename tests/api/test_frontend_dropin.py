"""`trio-front frontend`, the drop-in `vllm serve` launches, against the mock engine.

The test plays vLLM 0.32's supervisor (``v1/utils.py`` RustFrontendProcessManager, ``v1/engine/utils.py``
bind_engine_zmq_listeners): it binds the HTTP socket (bound, not listening), two listening AF_UNIX stream
sockets for the engine's input/output connections, spawns the frontend with ``pass_fds`` and vLLM's argv,
closes its own copies of the two listeners, and runs the engine handshake itself, with an INIT naming those
ipc:// addresses; the mock engine then connects to the frontend exactly as a real engine does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest
import trio
import zmq

from trio_front.engine import wire
from trio_front.engine.handshake import serve_handshake
from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.engine.zmq_trio import adopt_listener, listener_endpoint, make_socket
from trio_front.frontend import RefusedError, build_config, resolve_model_dir

from .conftest import MODEL

#: What vLLM always adds to the args JSON (RustFrontendProcessManager), as for `vllm serve models/tiny-llama`.
BASE_ARGS: dict[str, Any] = {
    "model_tag": str(MODEL),
    "engine_ready_timeout_secs": 600,
    "http_timeout_keep_alive": 5,
}


@attrs.define
class Supervisor:
    """vLLM's side of the launch: the sockets it binds, the frontend process, the engine it starts."""

    dir: Path
    http: socket.socket
    input_path: str
    output_path: str
    handshake_addr: str
    stderr_path: Path
    proc: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.getsockname()[1]}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def start_engine(self, nursery: trio.Nursery, step_ms: float = 2) -> None:
        """The supervisor's engine handshake (HELLO → INIT naming our listeners → READY) and the engine."""
        init = wire.HandshakeInit(
            addresses=wire.EngineAddresses(
                inputs=[f"ipc://{self.input_path}"], outputs=[f"ipc://{self.output_path}"]
            )
        )
        handshake = make_socket(zmq.Context.instance(), zmq.ROUTER, bind=self.handshake_addr)

        async def run_handshake() -> None:
            with handshake:
                await serve_handshake(handshake, init)

        nursery.start_soon(run_handshake)
        await nursery.start(run_mock_engine, MockEngineConfig(self.handshake_addr, step_ms=step_ms))

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        with trio.fail_after(timeout):
            return await self.proc.wait()


async def launch(
    directory: Path, args: dict[str, Any], *, argv: dict[str, str] | None = None, env: dict | None = None
) -> Supervisor:
    """Bind vLLM's three sockets and spawn ``trio-front frontend`` with vLLM's argv (*argv* overrides or
    adds options, e.g. ``{"--data-parallel-size": "2"}``) and *args* as the args JSON."""
    http = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    http.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    http.bind(("127.0.0.1", 0))  # vLLM's setup_server: bound, NOT listening
    listeners = []
    for name in ("input", "output"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(directory / name))
        listener.listen()
        listeners.append(listener)
    options = {
        "--listen-fd": str(http.fileno()),
        "--input-listener-fd": str(listeners[0].fileno()),
        "--output-listener-fd": str(listeners[1].fileno()),
        "--engine-start-index": "0",
        "--engine-count": "1",
        "--data-parallel-size": "1",
        **(argv or {}),
    }
    cmd = [sys.executable, "-m", "trio_front.frontend", "frontend"]
    for flag, value in options.items():
        cmd += [flag, value]
    cmd += ["--args-json", json.dumps({**BASE_ARGS, **args}, sort_keys=True)]
    sup = Supervisor(
        dir=directory,
        http=http,
        input_path=str(directory / "input"),
        output_path=str(directory / "output"),
        handshake_addr=f"ipc://{directory}/handshake",
        stderr_path=directory / "stderr.log",
    )
    with open(sup.stderr_path, "wb") as stderr:  # noqa: ASYNC230 (a local file, before the process runs)
        sup.proc = await trio.lowlevel.open_process(
            cmd,
            pass_fds=[http.fileno(), *(lis.fileno() for lis in listeners)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
    for listener in listeners:  # as vLLM: the frontend owns them now (the ipc files stay ours)
        listener.close()
    return sup


@pytest.fixture
def directory() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="tfdrop-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def procs() -> AsyncIterator[list[Supervisor]]:
    """Frontends a test started; killed if the test left one running."""
    started: list[Supervisor] = []
    yield started
    for sup in started:
        if sup.proc is not None and sup.proc.returncode is None:
            sup.proc.kill()
            await sup.proc.wait()
        sup.http.close()


async def wait_health(client: httpx.AsyncClient, status: int, timeout: float = 30.0) -> None:
    """Poll /health until it answers *status* (the frontend may still be importing)."""
    with trio.fail_after(timeout):
        while True:
            try:
                if (await client.get("/health")).status_code == status:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


async def test_dropin_serves_the_engine_vllm_started(directory: Path, procs: list[Supervisor]) -> None:
    """/health 503 until the engine registers, 200 after; the SDK's completion and streamed chat; one
    warning naming the unknown key; SIGTERM with a stream in flight → exit 0 within 5 s; vLLM's ipc
    files are left for vLLM to remove."""
    sup = await launch(directory, {"served_model_name": ["tiny"], "not_a_vllm_flag": 1})
    procs.append(sup)
    async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=sup.url, timeout=20) as client:
        await wait_health(client, 503)
        await trio.sleep(0.5)
        assert (await client.get("/health")).status_code == 503, "healthy before any engine registered"
        await sup.start_engine(nursery)
        await wait_health(client, 200, timeout=10)

        sdk = openai.AsyncOpenAI(base_url=sup.url + "/v1", api_key="none", max_retries=0)
        done = await sdk.completions.create(model="tiny", prompt="def hello(", max_tokens=5)
        assert done.usage is not None and done.usage.completion_tokens == 5
        assert done.choices[0].finish_reason == "length"
        chunks = [
            chunk
            async for chunk in await sdk.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
            )
        ]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "length"
        assert [m.id for m in (await sdk.models.list()).data] == ["tiny"]

        # A stream that would run for minutes is in flight when vLLM's SIGTERM comes.
        long = await sdk.completions.create(
            model="tiny", prompt="x", max_tokens=1500, stream=True, extra_body={"ignore_eos": True}
        )
        first = await long.__anext__()
        assert first.choices
        sigterm = time.monotonic()
        sup.proc.send_signal(signal.SIGTERM)
        assert await sup.wait_exit(timeout=5) == 0, sup.stderr
        took = time.monotonic() - sigterm
        await long.response.aclose()
        await sdk.close()
        nursery.cancel_scope.cancel()
    assert took < 5
    warnings = [line for line in sup.stderr.splitlines() if "not_a_vllm_flag" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], sup.stderr
    # libzmq never unlinks a path it did not bind, and we must not either: vLLM cleans its listeners up.
    assert Path(sup.input_path).exists() and Path(sup.output_path).exists()  # noqa: ASYNC240


async def test_dropin_drain_fits_vllms_kill_window(directory: Path, procs: list[Supervisor]) -> None:
    """``--shutdown-timeout 5``: vLLM SIGKILLs its frontend ``max(5, 5)`` s after SIGTERM, so a stream that
    would outlast the drain is drained for most of the window, then aborted, and we exit 0 inside it."""
    sup = await launch(directory, {"shutdown_timeout": 5})
    procs.append(sup)
    async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=sup.url, timeout=20) as client:
        await sup.start_engine(nursery, step_ms=20)  # 1500 tokens: 30 s
        await wait_health(client, 200)
        body = {"model": str(MODEL), "prompt": "x", "max_tokens": 1500, "stream": True, "ignore_eos": True}
        async with client.stream("POST", "/v1/completions", json=body) as response:
            lines = response.aiter_lines()
            assert (await lines.__anext__()).startswith("data: ")
            sigterm = time.monotonic()
            sup.proc.send_signal(signal.SIGTERM)
            async for _ in lines:  # still streaming while the drain runs, until the abort ends it
                pass
            streamed_for = time.monotonic() - sigterm
        assert await sup.wait_exit(timeout=10) == 0, sup.stderr
        took = time.monotonic() - sigterm
        nursery.cancel_scope.cancel()
    assert streamed_for > 2, f"no drain: the stream ended {streamed_for:.1f} s after SIGTERM"
    assert took < 5, f"exit {took:.1f} s after SIGTERM: vLLM would have SIGKILLed us at 5 s"


async def test_dropin_enforces_vllm_api_key(directory: Path, procs: list[Supervisor]) -> None:
    """`vllm serve ... --api-key sk-x` reaches us as ``"api_key": ["sk-x"]``: /v1 needs it, /health not."""
    sup = await launch(directory, {"api_key": ["sk-x"]})
    procs.append(sup)
    async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=sup.url, timeout=20) as client:
        await sup.start_engine(nursery)
        await wait_health(client, 200)
        model = str(MODEL)
        good = openai.AsyncOpenAI(base_url=sup.url + "/v1", api_key="sk-x", max_retries=0)
        done = await good.completions.create(model=model, prompt="def hello(", max_tokens=3)
        assert done.usage is not None and done.usage.completion_tokens == 3
        bad = openai.AsyncOpenAI(base_url=sup.url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.completions.create(model=model, prompt="def hello(", max_tokens=3)
        r = await client.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 1})
        assert r.status_code == 401
        await good.close()
        await bad.close()
        sup.proc.send_signal(signal.SIGTERM)
        assert await sup.wait_exit(timeout=5) == 0, sup.stderr
        nursery.cancel_scope.cancel()


async def test_dropin_refuses_what_it_cannot_honour(directory: Path, procs: list[Supervisor]) -> None:
    """An engine range outside the DP size in the argv and an unsupported flag in the JSON: non-zero exit,
    one stderr line naming both, before any engine is waited for."""
    sup = await launch(
        directory,
        {"tool_parser_plugin": "/x/plugin.py"},
        argv={"--data-parallel-size": "2", "--engine-count": "3"},
    )
    procs.append(sup)
    assert await sup.wait_exit(timeout=30) != 0
    errors = [line for line in sup.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, sup.stderr
    assert "--engine-start-index" in errors[0] and "--tool-parser-plugin" in errors[0], errors


async def test_dropin_exits_non_zero_when_no_engine_registers(
    directory: Path, procs: list[Supervisor]
) -> None:
    """vLLM's VLLM_ENGINE_READY_TIMEOUT_S (``engine_ready_timeout_secs``): no engine → a start-up failure."""
    sup = await launch(directory, {"engine_ready_timeout_secs": 2})
    procs.append(sup)
    async with httpx.AsyncClient(base_url=sup.url, timeout=5) as client:
        await wait_health(client, 503)
    began = time.monotonic()
    assert await sup.wait_exit(timeout=20) != 0
    assert time.monotonic() - began < 15
    assert "did not register within 2 s" in sup.stderr, sup.stderr


# ---------------------------------------------------------------- adopting vLLM's listeners


def _listening(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen()
    return sock


def test_listener_endpoints_are_rebuilt_from_the_socket(directory: Path) -> None:
    with _listening(socket.AF_UNIX, str(directory / "in")) as unix:
        assert listener_endpoint(unix.fileno()) == f"ipc://{directory}/in"
    with _listening(socket.AF_UNIX, b"\0tfdrop-abstract") as abstract:
        assert listener_endpoint(abstract.fileno()) == "ipc://@tfdrop-abstract"
    with _listening(socket.AF_INET, ("127.0.0.1", 0)) as tcp:
        assert listener_endpoint(tcp.fileno()) == f"tcp://127.0.0.1:{tcp.getsockname()[1]}"
    if socket.has_ipv6:
        try:
            tcp6 = _listening(socket.AF_INET6, ("::1", 0))
        except OSError:
            pass  # no IPv6 loopback in this container
        else:
            with tcp6:
                assert listener_endpoint(tcp6.fileno()) == f"tcp://[::1]:{tcp6.getsockname()[1]}"


def test_unusable_fds_are_refused_naming_the_fd(directory: Path) -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: vLLM's HTTP socket, not a ZMQ listener
        with pytest.raises(ValueError, match=f"fd {bound.fileno()} is not listening"):
            listener_endpoint(bound.fileno())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ValueError, match="not a stream socket"):
            listener_endpoint(udp.fileno())
    with open(directory / "file", "w") as plain:
        with pytest.raises(ValueError, match=f"fd {plain.fileno()} is not a socket"):
            listener_endpoint(plain.fileno())


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "family",
    [
        "unix",
        "tcp",
        pytest.param("tcp6", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 here")),
    ],
)
async def test_adopted_pair_carries_messages_both_ways(directory: Path, family: str) -> None:
    """A DEALER/PUSH connecting to the listeners' addresses reaches our adopted ROUTER/PULL, as an engine's
    do (over IPv6 too: ZMQ_IPV6 set); closing them leaves the ipc files (the supervisor's to clean)."""
    if family == "unix":
        listeners = [_listening(socket.AF_UNIX, str(directory / n)) for n in ("in", "out")]
    elif family == "tcp":
        listeners = [_listening(socket.AF_INET, ("127.0.0.1", 0)) for _ in range(2)]
    else:
        listeners = [_listening(socket.AF_INET6, ("::1", 0)) for _ in range(2)]
    ctx = zmq.Context.instance()
    addrs = [listener_endpoint(lis.fileno()) for lis in listeners]
    fds = [lis.detach() for lis in listeners]
    router = adopt_listener(ctx, zmq.ROUTER, fds[0])
    pull = adopt_listener(ctx, zmq.PULL, fds[1])
    assert router.sock.getsockopt(zmq.SNDHWM) == 0 and pull.sock.getsockopt(zmq.RCVHWM) == 0
    dealer = make_socket(ctx, zmq.DEALER, connect=addrs[0], identity=b"\0\0")
    push = make_socket(ctx, zmq.PUSH, connect=addrs[1])
    try:
        with trio.fail_after(5):
            dealer.send_nowait([b"ready"])
            assert await router.receive() == [b"\0\0", b"ready"]
            router.send_nowait([b"\0\0", b"request"])
            assert await dealer.receive() == [b"request"]
            push.send_nowait([b"output"])
            assert await pull.receive() == [b"output"]
    finally:
        for sock in (dealer, push, router, pull):
            sock.close()
    if family == "unix":
        assert (directory / "in").exists() and (directory / "out").exists()


# ---------------------------------------------------------------- model_tag → local directory


def _fake_hub_cache(cache: Path, repo: str, revisions: dict[str, str]) -> dict[str, Path]:
    """huggingface_hub's cache layout for *repo*: one snapshot per ref (ref → commit), each holding the
    tiny model's text files (the weights are the engine's business and are left out)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshots = {}
    for ref, commit in revisions.items():
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
        snap = root / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "chat_template.jinja"):
            shutil.copy(MODEL / name, snap / name)
        snapshots[ref] = snap
    return snapshots


def test_model_tag_directory_is_used_as_is() -> None:
    assert resolve_model_dir(str(MODEL)) == MODEL.resolve()
    with pytest.raises(ValueError, match="no such directory"):
        resolve_model_dir("/no/such/model/dir")


def test_hub_id_resolves_from_the_cache_at_its_revision_offline(directory: Path) -> None:
    snaps = _fake_hub_cache(directory, "acme/tiny", {"main": "a" * 40, "v1": "b" * 40})
    offline = {"HF_HUB_OFFLINE": "1"}
    got = resolve_model_dir("acme/tiny", download_dir=str(directory), environ=offline)
    assert got == snaps["main"] and (got / "tokenizer.json").exists()
    assert (
        resolve_model_dir("acme/tiny", revision="v1", download_dir=str(directory), environ=offline)
        == (snaps["v1"])
    )
    with pytest.raises(ValueError, match=r"'acme/other'.*HF_HUB_OFFLINE"):
        resolve_model_dir("acme/other", download_dir=str(directory), environ=offline)


# ---------------------------------------------------------------- the argv → FrontendConfig mapping


def _namespace(http: socket.socket, inp: socket.socket, out: socket.socket, args: dict[str, Any]) -> Any:
    import argparse

    return argparse.Namespace(
        listen_fd=http.fileno(),
        input_listener_fd=inp.fileno(),
        output_listener_fd=out.fileno(),
        engine_start_index=0,
        engine_count=1,
        data_parallel_size=1,
        grpc_listen_fd=None,
        coordinator_address=None,
        args_json=json.dumps(args),
    )


def test_build_config_fetches_model_and_tokenizer_from_the_hub_cache(directory: Path) -> None:
    """A hub id for the model and another for the tokenizer (at its own revision), from vLLM's download
    keys; the served name defaults to the model id as given (vLLM's rule); VLLM_API_KEY is read."""
    models = _fake_hub_cache(directory, "acme/tiny", {"main": "a" * 40})
    tokenizers = _fake_hub_cache(directory, "acme/tok", {"main": "c" * 40, "v1": "d" * 40})
    with (
        socket.socket() as http,
        _listening(socket.AF_UNIX, str(directory / "in")) as inp,
        _listening(socket.AF_UNIX, str(directory / "out")) as out,
    ):
        http.bind(("127.0.0.1", 0))
        args = {
            **BASE_ARGS,
            "model_tag": "acme/tiny",
            "tokenizer": "acme/tok",
            "tokenizer_revision": "v1",
            "download_dir": str(directory),
        }
        config = build_config(
            _namespace(http, inp, out, args), {"HF_HUB_OFFLINE": "1", "VLLM_API_KEY": "sk-env"}
        )
        fds = (http.fileno(), inp.fileno(), out.fileno())
    assert config.model == models["main"] and config.tokenizer == tokenizers["v1"]
    assert config.served_model_name == "acme/tiny"
    assert (config.listen_fd, config.input_fd, config.output_fd) == fds
    assert config.api_keys == ("sk-env",)


def test_build_config_refuses_a_zmq_fd_that_is_not_listening(directory: Path) -> None:
    with socket.socket() as http, _listening(socket.AF_UNIX, str(directory / "out")) as out:
        http.bind(("127.0.0.1", 0))
        with pytest.raises(RefusedError, match=f"--input-listener-fd: fd {http.fileno()} is not listening"):
            build_config(_namespace(http, http, out, BASE_ARGS), {})


def test_build_config_refuses_a_missing_certificate_naming_the_flag(directory: Path) -> None:
    """`vllm serve --ssl-keyfile K --ssl-certfile C` with C missing: one line, before anything starts."""
    (directory / "key.pem").write_text("not used")
    with (
        socket.socket() as http,
        _listening(socket.AF_UNIX, str(directory / "in")) as inp,
        _listening(socket.AF_UNIX, str(directory / "out")) as out,
    ):
        http.bind(("127.0.0.1", 0))
        args = {**BASE_ARGS, "ssl_keyfile": str(directory / "key.pem"), "ssl_certfile": "/no/cert.pem"}
        with pytest.raises(RefusedError, match="--ssl-certfile"):
            build_config(_namespace(http, inp, out, args), {})
