"""How each frontend is started against a fresh engine, and torn down.

Every frontend is the **handshake owner**: it binds ``tcp://127.0.0.1:<rpc port>`` and the engine (the
mock, or vLLM's headless engine) connects to it. The front is started first, then the engine; each runs
in its own process group (:class:`trio_front.engine.launch.EngineProcess`), so teardown signals whole
trees. Attachment is one-shot, so every (frontend, engine) pair is fresh.

Frontends:

* ``trio-front`` — ``trio-front run --engine-addr tcp://H:P --model DIR --port N`` (flags it lacks are
  not passed; ``--host``/``--served-model-name`` only if its ``--help`` lists them).
* ``trio-front-wN`` — the same with ``--workers N``: N API-server processes on one port (SO_REUSEPORT),
  each with its own engine socket pair (the scale-out; its CPU is the whole process tree).
* ``vllm-py`` — vLLM 0.32's API server with ``--data-parallel-size-local 0`` and the engine's flags,
  plus ``--disable-uvicorn-access-log`` (the other two log no access lines either).
* ``vllm-rs`` — the Rust frontend from the PyPI ``vllm==0.33.0`` wheel, extracted once into
  ``bench/.cache/bin/vllm-rs`` (``pip download --no-deps`` with the engine venv's pip, then unzip of
  that one member).

Engines: ``mock`` (``trio-front mock-engine``, event log on) and ``real`` (vLLM 0.32 headless on the
tiny model, float32, ``--enforce-eager``), both with the same ``--max-num-seqs`` and ``--max-model-len``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trio_front.engine.launch import (  # noqa: E402
    TINY_MODEL_DIR,
    EngineProcess,
    engine_env,
    find_engine_python,
    headless_engine_command,
    pick_free_port,
    python_frontend_command,
    wait_for_http_health,
)

FRONTENDS = ("trio-front", "vllm-py", "vllm-rs")
#: Not a peer but a floor: hypercorn-on-trio with almost no app (``floor_app.py``); opt in by name.
FLOOR = "hypercorn-floor"
#: The same floor streaming through trio-front's direct socket writes (``floor_app.py --direct``).
FLOOR_DIRECT = "hypercorn-floor-direct"
#: The same floor streaming the engine's tokens through trio-front's engine link (W3's abort floor).
FLOOR_ENGINE = "hypercorn-floor-engine"
FLOORS = (FLOOR, FLOOR_DIRECT, FLOOR_ENGINE)
#: Scale-out variants accepted by --frontends besides FRONTENDS: ``trio-front-w<N>``.
WORKERS_PREFIX = "trio-front-w"
#: Opt-in batching variants: ``trio-front-si<N>`` runs with ``--stream-interval N`` (never the headline).
STREAM_INTERVAL_PREFIX = "trio-front-si"
ENGINES = ("mock", "real")
CACHE = REPO / "bench" / ".cache"
VLLM_RS_VERSION = "0.33.0"
#: ``BENCH_TRIO_FRONT`` may name another checkout's launcher, to compare a change against its base.
TRIO_FRONT = Path(os.environ.get("BENCH_TRIO_FRONT") or Path(sys.executable).with_name("trio-front"))
HOST = "127.0.0.1"


@dataclass
class EngineConfig:
    """Engine flags shared by every frontend in a run (the Python front gets them too)."""

    kind: str = "mock"  # mock | real
    max_num_seqs: int = 256
    max_model_len: int = 2048
    step_ms: float = 10.0  # mock only

    def describe(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "max_num_seqs": self.max_num_seqs,
            "max_model_len": self.max_model_len,
            **(
                {"step_ms": self.step_ms}
                if self.kind == "mock"
                else {"dtype": "float32", "enforce_eager": True}
            ),
        }


# ------------------------------------------------------------------------------------------------- vllm-rs


def ensure_vllm_rs(cache: Path = CACHE, timeout: float = 900.0) -> Path:
    """Path of a runnable vllm-rs binary, downloading and extracting the 0.33.0 wheel if needed."""
    binary = cache / "bin" / "vllm-rs"
    if binary.exists():
        return binary
    wheel_dir = cache / "wheel"
    wheels = sorted(wheel_dir.glob(f"vllm-{VLLM_RS_VERSION}-*.whl"))
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        pip = [str(find_engine_python()), "-m", "pip", "download", "--no-deps", f"vllm=={VLLM_RS_VERSION}"]
        subprocess.run([*pip, "-d", str(wheel_dir)], check=True, timeout=timeout, capture_output=True)
        wheels = sorted(wheel_dir.glob(f"vllm-{VLLM_RS_VERSION}-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download left no vllm-{VLLM_RS_VERSION} wheel in {wheel_dir}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".part")
    with zipfile.ZipFile(wheels[-1]) as zf, zf.open("vllm/vllm-rs") as src, tmp.open("wb") as dst:
        for _ in range(100_000):
            block = src.read(1 << 20)
            if not block:
                break
            dst.write(block)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.rename(binary)
    return binary


def _help_text(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=engine_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout + out.stderr if out.returncode == 0 else None


def trio_front_workers(name: str) -> int | None:
    """N for ``trio-front-wN``, 1 for ``trio-front`` and ``trio-front-siN``, None for a peer or an unknown
    name."""
    if name == "trio-front" or trio_front_stream_interval(name) is not None:
        return 1
    suffix = name.removeprefix(WORKERS_PREFIX)
    if suffix != name and suffix.isdigit() and int(suffix) >= 1:
        return int(suffix)
    return None


def trio_front_stream_interval(name: str) -> int | None:
    """N for ``trio-front-siN`` (``--stream-interval N``), else None."""
    suffix = name.removeprefix(STREAM_INTERVAL_PREFIX)
    if suffix != name and suffix.isdigit() and int(suffix) >= 1:
        return int(suffix)
    return None


def is_frontend(name: str) -> bool:
    return name in FRONTENDS or name in FLOORS or trio_front_workers(name) is not None


def frontend_unavailable(name: str) -> str | None:
    """Why *name* cannot run here, or None if it can."""
    if trio_front_workers(name) is not None:
        if not TRIO_FRONT.exists():
            return f"{TRIO_FRONT} is missing"
        if _help_text([str(TRIO_FRONT), "run", "--help"]) is None:
            return "`trio-front run --help` fails: the server command does not exist yet"
        return None
    if name in FLOORS:
        return None
    if name == "vllm-py":
        try:
            find_engine_python()
        except RuntimeError as exc:
            return str(exc)
        return None
    if name == "vllm-rs":
        try:
            binary = ensure_vllm_rs()
        except (OSError, RuntimeError, subprocess.SubprocessError, KeyError, zipfile.BadZipFile) as exc:
            return f"could not get the vllm-rs binary: {exc!r}"
        if _help_text([str(binary), "--version"]) is None:
            return f"{binary} --version fails"
        return None
    return f"unknown frontend {name!r}"


# ------------------------------------------------------------------------------------------------- commands


def frontend_command(name: str, rpc_port: int, http_port: int, engine: EngineConfig) -> list[str]:
    """argv of frontend *name*, owning the handshake at 127.0.0.1:rpc_port and serving HTTP on http_port."""
    model = str(TINY_MODEL_DIR)
    if name == "vllm-py":
        return python_frontend_command(
            model, HOST, rpc_port, HOST, http_port,
            max_model_len=engine.max_model_len,
            extra_args=["--max-num-seqs", str(engine.max_num_seqs), "--disable-uvicorn-access-log"],
        )  # fmt: skip
    if name == "vllm-rs":
        return [
            str(ensure_vllm_rs()), "serve", model,
            "--data-parallel-size-local", "0",
            "--data-parallel-address", HOST,
            "--data-parallel-rpc-port", str(rpc_port),
            "--host", HOST, "--port", str(http_port),
            "--served-model-name", "tiny",
        ]  # fmt: skip
    if name in FLOORS:
        floor_app = REPO / "bench" / "floor_app.py"
        argv = [sys.executable, str(floor_app), "--host", HOST, "--port", str(http_port)]
        if name == FLOOR_ENGINE:
            return [*argv, "--engine-addr", f"tcp://{HOST}:{rpc_port}"]
        return [*argv, "--direct"] if name == FLOOR_DIRECT else argv
    workers = trio_front_workers(name)
    if workers is not None:
        argv = [str(TRIO_FRONT), "--log-level", "WARNING", "run", "--engine-addr", f"tcp://{HOST}:{rpc_port}"]
        argv += ["--model", model, "--port", str(http_port)]
        help_text = _help_text([str(TRIO_FRONT), "run", "--help"]) or ""
        if "--host" in help_text:
            argv += ["--host", HOST]
        if "--served-model-name" in help_text:
            argv += ["--served-model-name", "tiny"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        interval = trio_front_stream_interval(name)
        if interval is not None:
            argv += ["--stream-interval", str(interval)]
        return argv
    raise ValueError(f"unknown frontend {name!r}")


def engine_command(engine: EngineConfig, rpc_port: int, event_log: Path | None) -> list[str]:
    """argv of a fresh engine that connects to the front's handshake socket at 127.0.0.1:rpc_port."""
    if engine.kind == "mock":
        argv = [
            str(TRIO_FRONT), "--log-level", "WARNING", "mock-engine",
            "--engine-addr", f"tcp://{HOST}:{rpc_port}",
            "--step-ms", str(engine.step_ms),
            "--max-model-len", str(engine.max_model_len),
            "--max-num-seqs", str(engine.max_num_seqs),
        ]  # fmt: skip
        if event_log is not None:
            argv += ["--event-log", str(event_log)]
        return argv
    if engine.kind == "real":
        return headless_engine_command(
            TINY_MODEL_DIR,
            HOST,
            rpc_port,
            max_model_len=engine.max_model_len,
            max_num_seqs=engine.max_num_seqs,
        )
    raise ValueError(f"unknown engine {engine.kind!r}")


# ------------------------------------------------------------------------------------------------- a pair


def _post_json(url: str, body: dict[str, object], timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Pair:
    """A frontend and a fresh engine attached to it; a context manager (start, ready, teardown)."""

    frontend: str
    engine: EngineConfig
    log_dir: Path
    ready_timeout: float = 300.0
    http_port: int = 0
    rpc_port: int = 0
    front: EngineProcess | None = None
    eng: EngineProcess | None = None
    startup_s: float | None = None
    model_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def event_log(self) -> Path | None:
        return self.log_dir / "engine-events.jsonl" if self.engine.kind == "mock" else None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def start(self) -> Self:
        """Start front then engine; return once a completion succeeds (raises on failure or timeout)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.rpc_port = pick_free_port(), pick_free_port()
        env = engine_env()
        t0 = time.monotonic()
        self.front = EngineProcess(
            frontend_command(self.frontend, self.rpc_port, self.http_port, self.engine),
            env=env,
            log_path=self.log_dir / "front.log",
            cwd=REPO if trio_front_workers(self.frontend) else None,
        ).start()
        if self.event_log is not None and self.event_log.exists():
            self.event_log.unlink()
        self.eng = EngineProcess(
            engine_command(self.engine, self.rpc_port, self.event_log),
            env=env,
            log_path=self.log_dir / "engine.log",
        ).start()
        self._wait_ready(t0)
        self.startup_s = round(time.monotonic() - t0, 2)
        return self

    def _wait_ready(self, t0: float) -> None:
        assert self.front is not None and self.eng is not None
        deadline = t0 + self.ready_timeout
        for _ in range(100_000):
            if self.eng.returncode is not None:
                raise RuntimeError(f"engine exited ({self.eng.returncode}): {self.eng.read_log(tail=2000)}")
            try:
                wait_for_http_health(f"{self.base_url}/health", 2.0, process=self.front)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        self.timings["health_s"] = round(time.monotonic() - t0, 2)
        with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=10) as r:
            self.model_id = json.loads(r.read())["data"][0]["id"]
        body = {"model": self.model_id, "prompt": [5, 6, 7, 8], "max_tokens": 2, "temperature": 0.0}
        last = b""
        for _ in range(100_000):
            status, last = _post_json(f"{self.base_url}/v1/completions", body, timeout=30)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe completion failed: {status} {last[:300]!r}")
            time.sleep(0.5)
        self.timings["first_completion_s"] = round(time.monotonic() - t0, 2)

    def pids(self) -> dict[str, int]:
        assert self.front is not None and self.eng is not None
        return {"front": self.front.pid, "engine": self.eng.pid}

    def stop(self) -> dict[str, int | None]:
        """Front first (SIGTERM, then SIGKILL after 10 s), then the engine: both whole groups."""
        rcs: dict[str, int | None] = {}
        if self.front is not None:
            rcs["front"] = self.front.terminate(timeout=10.0)
        if self.eng is not None:
            rcs["engine"] = self.eng.terminate(timeout=20.0)
        return rcs

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_count() -> int:
    return os.cpu_count() or 1
