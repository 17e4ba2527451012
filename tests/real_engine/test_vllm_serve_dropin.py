"""The one-command deployment: ``VLLM_USE_RUST_FRONTEND=1 VLLM_RUST_FRONTEND_PATH=<repo>/.venv/bin/trio-front
vllm serve models/tiny-llama --api-key ...`` on the real vLLM 0.32 CPU engine.

vLLM's supervisor binds the HTTP socket and the engine's ZMQ listeners, starts the engine, spawns
``trio-front frontend ...`` and runs the engine handshake; the tests use the unmodified openai SDK against
it, then SIGTERM ``vllm serve`` (as systemd or Kubernetes would) and check that its whole process tree is
gone. One ``vllm serve`` start for the module (~45 s). ``TRIO_FRONT_DROPIN_BINARY`` names another binary for
vLLM to launch (default: this repository's ``.venv/bin/trio-front``).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from trio_front.engine.launch import (
    EngineProcess,
    full_vllm_serve_command,
    pick_free_port,
    wait_for_http_health,
)

from .conftest import MODEL, REPO, require_engine

pytestmark = pytest.mark.real_engine
NAME = "tiny"
KEY = "sk-dropin-test"
BINARY = Path(os.environ.get("TRIO_FRONT_DROPIN_BINARY", REPO / ".venv" / "bin" / "trio-front"))
#: vLLM's supervisor gives its frontend max(shutdown_timeout, 5) s after SIGTERM, then shuts the engine
#: down (its own waits are a few seconds more); the whole tree must be gone well inside this.
SHUTDOWN_WINDOW = 20.0


class DropIn:
    """The running ``vllm serve`` tree and what the test measured about it."""

    def __init__(self, process: EngineProcess, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.ready_after: float | None = None

    def frontend_argv(self) -> list[str]:
        """The argv vLLM logged for its frontend (the args JSON redacted), as one list."""
        match = re.search(r"Launching Rust frontend: (.*)", self.process.read_log())
        assert match, self.process.read_log(tail=3000)
        # binary, "frontend", six flag/value pairs, "--args-json", then the JSON (which has spaces)
        return match.group(1).split(" ", 15)

    def live_members(self) -> list[int]:
        """pids of the process group still running (zombies, dead but not yet reaped by init, excluded)."""
        live = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # /proc/PID/stat: "pid (comm) state ppid pgrp ...", comm may hold spaces and parentheses
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid and fields[0] != "Z":
                live.append(int(entry.name))
        return live


@pytest.fixture(scope="module")
def dropin() -> Iterator[DropIn]:
    require_engine()
    port = pick_free_port()
    command = full_vllm_serve_command(
        MODEL, "127.0.0.1", port, served_model_name=NAME, extra_args=("--api-key", KEY)
    )
    process = EngineProcess(command)  # its own session: the test can see the whole group
    process.env.update(VLLM_USE_RUST_FRONTEND="1", VLLM_RUST_FRONTEND_PATH=str(BINARY))
    server = DropIn(process, port)
    process.start()
    try:
        server.ready_after = wait_for_http_health(f"{server.url}/health", 300, process=process)
        print(f"\nvllm serve + trio-front frontend ready after {server.ready_after:.1f} s")
        yield server
    finally:
        process.terminate()
        if process.returncode not in (0, None):
            print(process.read_log(tail=4000))


def test_vllm_launched_trio_front_with_its_argv(dropin: DropIn) -> None:
    argv = dropin.frontend_argv()
    print("vLLM's frontend argv:", " ".join(argv))
    assert argv[0] == str(BINARY) and argv[1] == "frontend"
    assert argv[2:14:2] == [
        "--listen-fd",
        "--input-listener-fd",
        "--output-listener-fd",
        "--engine-start-index",
        "--engine-count",
        "--data-parallel-size",
    ], argv
    assert argv[9] == "0" and argv[11] == "1" and argv[13] == "1", argv  # one engine, rank 0, no DP
    assert argv[14] == "--args-json" and '"api_key": "***"' in argv[15], argv
    log = dropin.process.read_log()
    assert KEY not in log  # vLLM redacts it in its line; we must not log it either
    assert "trio-front serving" in log and "engine link ready" in log, log[-3000:]


def test_sdk_completion_and_streamed_chat_with_the_key(dropin: DropIn) -> None:
    client = openai.OpenAI(base_url=f"{dropin.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    done = client.completions.create(model=NAME, prompt="def hello(", max_tokens=8, temperature=0)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 8 and done.choices[0].text
    chunks = list(
        client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [m.id for m in client.models.list().data] == [NAME]
    # max_model_len comes from the engine's registration (it got --max-model-len 2048 from vllm serve)
    card = httpx.get(f"{dropin.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert card["data"][0]["max_model_len"] == 2048


def test_api_key_is_enforced(dropin: DropIn) -> None:
    client = openai.OpenAI(base_url=f"{dropin.url}/v1", api_key="sk-wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        client.completions.create(model=NAME, prompt="def hello(", max_tokens=2)
    assert httpx.get(f"{dropin.url}/v1/models").status_code == 401
    assert httpx.get(f"{dropin.url}/health").status_code == 200  # vLLM leaves /health open


def test_sigterm_to_vllm_serve_leaves_nothing_behind(dropin: DropIn) -> None:
    """Last in the module: it ends the shared server."""
    process = dropin.process
    began = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)  # the leader only, as a service manager would
    rc = process.wait(SHUTDOWN_WINDOW)
    leader_gone = time.monotonic() - began
    while dropin.live_members() and time.monotonic() - began < SHUTDOWN_WINDOW:
        time.sleep(0.05)
    tree_gone = time.monotonic() - began
    print(
        f"SIGTERM → vllm serve exited (rc {rc}) after {leader_gone:.1f} s, tree gone after {tree_gone:.1f} s"
    )
    assert not dropin.live_members(), "a process of vllm serve's tree outlived it"
    log = process.read_log()
    assert "trio-front frontend stopped cleanly (exit status 0)" in log, log[-3000:]
    # vLLM's RustFrontendProcessManager SIGKILLs a frontend still alive max(shutdown_timeout, 5) s after
    # SIGTERM and says so. (Its engine manager force-kills the EngineCore at once when --shutdown-timeout
    # is 0, its default: vLLM's own behaviour, with its own frontend too.)
    assert "Subprocess manager: force killing" not in log, log[-3000:]
    assert rc == 0, log[-3000:]
