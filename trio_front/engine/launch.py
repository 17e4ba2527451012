"""Start and stop an unchanged vLLM engine (and reference vLLM servers) as child processes.

Pure stdlib and synchronous: used by ``trio-front serve`` (which starts a headless engine next to itself)
and by tests. Nothing here imports torch or vllm; the engine runs in its own venv
(``scripts/setup_engine.sh``).

In vLLM's headless mode the *frontend binds* the handshake socket and the engine *connects* to it
(``--data-parallel-address``/``--data-parallel-rpc-port``), so start order does not matter; the engine
waits 5 minutes for INIT after its HELLO. Attachment is one-shot: restart the engine with the front.

Logs: a process started without a ``log_path`` writes to a file in this process's log directory
(:func:`run_log_dir`, one per run, named in the log once). The file is deleted when the process is stopped
(``terminate``/``kill``) or exits with status 0, and kept, its path logged, when it fails; the directory is
removed at exit once empty.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_PYTHON_ENV = "TRIO_FRONT_ENGINE_PYTHON"
DEFAULT_ENGINE_VENV = REPO_ROOT / ".engine-venv"
TINY_MODEL_DIR = REPO_ROOT / "models" / "tiny-llama"

# The vLLM CLI entry point, run as a module so the venv's python is all we need (no console script).
_VLLM_CLI = ("-m", "vllm.entrypoints.cli.main", "serve")

log = logging.getLogger("trio_front.engine")

_run_log_dir: Path | None = None


def run_log_dir() -> Path:
    """This process's directory for the logs of the processes it starts (created, and named in the log,
    on first use; removed at exit if empty): ``$TMPDIR/trio-front-logs-XXXXXXXX``."""
    global _run_log_dir
    if _run_log_dir is None or not _run_log_dir.is_dir():
        _run_log_dir = Path(tempfile.mkdtemp(prefix="trio-front-logs-"))
        atexit.register(_remove_if_empty, _run_log_dir)
        log.info(
            "engine logs go to %s (each deleted when its process stops cleanly, kept if it fails)",
            _run_log_dir,
        )
    return _run_log_dir


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # a failed process's log is in it (or it is gone already)
        pass


class EngineNotInstalledError(RuntimeError):
    """No engine interpreter was found; run scripts/setup_engine.sh."""


def find_engine_python() -> Path:
    """The Python interpreter of the vLLM engine venv.

    ``$TRIO_FRONT_ENGINE_PYTHON`` if set (must exist), else ``<repo>/.engine-venv/bin/python`` if present.
    Raises :class:`EngineNotInstalledError` otherwise.
    """
    override = os.environ.get(ENGINE_PYTHON_ENV)
    if override:
        path = Path(override)
        if not path.exists():
            raise EngineNotInstalledError(f"{ENGINE_PYTHON_ENV}={override} does not exist")
        return path
    default = DEFAULT_ENGINE_VENV / "bin" / "python"
    if default.exists():
        return default
    raise EngineNotInstalledError(
        f"no vLLM engine environment: {default} is missing and {ENGINE_PYTHON_ENV} is unset. "
        f"Create it with: {REPO_ROOT / 'scripts' / 'setup_engine.sh'}"
    )


def engine_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for vLLM processes: ``base`` (default ``os.environ``) plus offline/CPU settings.

    Always set: no hub or telemetry traffic, CPU platform, unbuffered output (so logs are live).
    Set only if absent: ``VLLM_HOST_IP=127.0.0.1`` (else the engine advertises eth0 internally) and
    ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB; vLLM's CPU default would take far more RAM).
    ``VLLM_USE_RUST_FRONTEND`` is removed: these commands must start vLLM's own processes.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_TARGET_DEVICE="cpu",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.pop("VLLM_USE_RUST_FRONTEND", None)
    return env


def engine_args(
    *,
    dtype: str | None = "float32",
    max_model_len: int | None = 2048,
    enforce_eager: bool = True,
    max_num_seqs: int | None = None,
    seed: int | None = 0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Model/engine flags shared by every vLLM command here (front and engine must agree on them).

    Defaults suit the bundled tiny model and fast, reliable start-up on CPU:
    ``--enforce-eager`` skips torch.compile (start-up ~10-30 s faster; steps ~25 % slower; its AOT cache
    never reloads on this build anyway); ``float32`` matches the checkpoint and keeps greedy output stable
    across batch shapes; ``--max-model-len 2048`` bounds the scheduler. Pass ``None``/``False`` to omit.
    """
    args: list[str] = []
    if dtype is not None:
        args += ["--dtype", dtype]
    if max_model_len is not None:
        args += ["--max-model-len", str(max_model_len)]
    if enforce_eager:
        args.append("--enforce-eager")
    if max_num_seqs is not None:
        args += ["--max-num-seqs", str(max_num_seqs)]
    if seed is not None:
        args += ["--seed", str(seed)]
    args += list(extra_args)
    return args


def headless_engine_command(
    model_dir: str | os.PathLike[str],
    host: str,
    port: int,
    *,
    python: str | os.PathLike[str] | None = None,
    max_model_len: int | None = 2048,
    dtype: str | None = "float32",
    enforce_eager: bool = True,
    max_num_seqs: int | None = None,
    seed: int | None = 0,
    extra_args: Sequence[str] = (),
    data_parallel_size: int = 1,
    data_parallel_size_local: int | None = None,
    data_parallel_start_rank: int = 0,
) -> list[str]:
    """argv of a headless vLLM engine group that connects to the handshake ROUTER at ``host:port``: DP
    ranks ``data_parallel_start_rank .. + data_parallel_size_local - 1`` (default: all
    ``data_parallel_size`` of them, from rank 0) of a ``data_parallel_size``-rank group, one engine core
    process per rank, as ``vllm serve --headless -dp N -dpl K [-dpr R]`` starts them.

    Each rank sends HELLO there, expects INIT naming the front's input ROUTER / output PULL, loads the
    model, then registers on the input socket and sends READY. No HTTP server is started.
    """
    local = data_parallel_size if data_parallel_size_local is None else data_parallel_size_local
    start = ["--data-parallel-start-rank", str(data_parallel_start_rank)] if data_parallel_start_rank else []
    py = str(python) if python is not None else str(find_engine_python())
    return [
        py,
        *_VLLM_CLI,
        str(model_dir),
        "--headless",
        "--data-parallel-size", str(data_parallel_size),
        "--data-parallel-size-local", str(local),
        *start,
        "--data-parallel-address", host,
        "--data-parallel-rpc-port", str(port),
        *engine_args(
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
            max_num_seqs=max_num_seqs, seed=seed, extra_args=extra_args,
        ),
    ]  # fmt: skip


def python_frontend_command(
    model_dir: str | os.PathLike[str],
    engine_host: str,
    engine_port: int,
    http_host: str,
    http_port: int,
    *,
    served_model_name: str = "tiny",
    python: str | os.PathLike[str] | None = None,
    max_model_len: int | None = 2048,
    dtype: str | None = "float32",
    enforce_eager: bool = True,
    seed: int | None = 0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv of vLLM's own Python API server with no local engine; it owns the handshake at engine_host:port.

    Pair it with :func:`headless_engine_command` on the same host/port and the same engine flags
    (the Python front builds the full VllmConfig and tokenizer from them). It serves HTTP on
    ``http_host:http_port``. Beware: while waiting for its engine it ignores SIGTERM; use ``kill()``.
    """
    py = str(python) if python is not None else str(find_engine_python())
    return [
        py,
        *_VLLM_CLI,
        str(model_dir),
        "--data-parallel-size", "1",
        "--data-parallel-size-local", "0",
        "--data-parallel-address", engine_host,
        "--data-parallel-rpc-port", str(engine_port),
        "--host", http_host,
        "--port", str(http_port),
        "--served-model-name", served_model_name,
        *engine_args(
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager, seed=seed,
            extra_args=extra_args,
        ),
    ]  # fmt: skip


def full_vllm_serve_command(
    model_dir: str | os.PathLike[str],
    host: str,
    port: int,
    *,
    served_model_name: str = "tiny",
    python: str | os.PathLike[str] | None = None,
    max_model_len: int | None = 2048,
    dtype: str | None = "float32",
    enforce_eager: bool = True,
    max_num_seqs: int | None = None,
    seed: int | None = 0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv of a plain ``vllm serve`` (API server + its own engine), the reference for differential tests."""
    py = str(python) if python is not None else str(find_engine_python())
    return [
        py,
        *_VLLM_CLI,
        str(model_dir),
        "--host", host,
        "--port", str(port),
        "--served-model-name", served_model_name,
        *engine_args(
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
            max_num_seqs=max_num_seqs, seed=seed, extra_args=extra_args,
        ),
    ]  # fmt: skip


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (racy by nature; fine for tests on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EngineProcess:
    """One vLLM process tree (``vllm serve`` parent, EngineCore, Worker) in its own process group.

    ``start_new_session=True`` makes the child a session and group leader, so signals go to the whole
    tree with ``os.killpg``: a test can SIGKILL everything to simulate engine death without orphans.
    stdout and stderr go to ``log_path``; unless given, a file in :func:`run_log_dir` that
    :meth:`terminate`/:meth:`kill` delete when the process ended cleanly (see :attr:`failed`) and keep,
    logging its path, otherwise (or after :meth:`keep_log`). A given ``log_path`` is the caller's and never
    deleted. Usable as a context manager: ``with EngineProcess(cmd) as eng: ...`` starts it and terminates
    the group on exit.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.env = engine_env() if env is None else dict(env)
        #: the log file is ours to delete (no ``log_path`` given)
        self.owns_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-", suffix=".log", dir=run_log_dir())
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self._keep_log = False
        #: terminate()/kill() found it running and signalled it (then SIGTERM/SIGKILL is a clean end)
        self._stopped_by_us = False
        # Default cwd /tmp: a `vllm` directory in the caller's cwd must not shadow the installed package.
        self.cwd = Path(cwd) if cwd is not None else Path(tempfile.gettempdir())
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None  # time.monotonic() at start()

    @classmethod
    def headless(
        cls,
        model_dir: str | os.PathLike[str],
        host: str,
        port: int,
        *,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **command_kwargs: object,
    ) -> EngineProcess:
        """An (unstarted) headless engine; ``command_kwargs`` go to :func:`headless_engine_command`."""
        return cls(
            headless_engine_command(model_dir, host, port, **command_kwargs),  # type: ignore[arg-type]
            env=env,
            log_path=log_path,
        )

    def start(self) -> Self:
        """Spawn the process (once). Returns self."""
        if self._proc is not None:
            raise RuntimeError("already started")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc

    @property
    def pid(self) -> int:
        """pid of the group leader (= process group id)."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status of the group leader, or None while it runs (polls)."""
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the group leader to exit; raises ``subprocess.TimeoutExpired`` on timeout."""
        return self.proc.wait(timeout)

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:  # the whole group is already gone
            pass

    def _wait_group_gone(self, timeout: float) -> bool:
        """Poll until no process of the group is left (SIGKILL delivery is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    @property
    def failed(self) -> bool:
        """It has exited and not cleanly: on its own with a non-zero status, or, stopped by
        :meth:`terminate`/:meth:`kill`, with a status other than 0 or death by SIGTERM/SIGKILL."""
        rc = self.returncode
        if rc is None or rc == 0:
            return False
        return not (self._stopped_by_us and rc in (-signal.SIGTERM, -signal.SIGKILL))

    def keep_log(self) -> None:
        """Keep the log file whatever the exit status (e.g. the engine exited while it was needed)."""
        self._keep_log = True

    def _settle_log(self) -> None:
        """Once the group is gone: delete our log after a clean end, else keep it and say where it is."""
        if not self.owns_log or not self.log_path.exists():
            return
        if self._keep_log or self.failed:
            log.warning(
                "kept the log of pid %d (exit status %s): %s", self.pid, self.returncode, self.log_path
            )
            self.owns_log = False  # said once; the file is the user's now
        else:
            self.log_path.unlink(missing_ok=True)

    def kill(self, group_timeout: float = 5.0) -> None:
        """SIGKILL the whole process group at once (simulated engine death).

        Returns once the leader is reaped and (up to ``group_timeout`` s) no group member is left,
        so ports and shared memory of the old tree are released when the caller continues. Then the
        log is settled (see the class docstring).
        """
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._stopped_by_us = True
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        self._wait_group_gone(group_timeout)
        self._settle_log()

    def terminate(self, timeout: float = 15.0) -> int | None:
        """Graceful stop: SIGTERM to the group, wait up to ``timeout`` s for the leader, else SIGKILL.

        A final SIGKILL to the group always follows, so no EngineCore/Worker outlives the call; then the
        log is settled (see the class docstring). Returns the leader's exit status (None if never
        started). Safe to call more than once.
        """
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._stopped_by_us = True
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)
        rc = self._proc.wait()
        self._wait_group_gone(5.0)
        self._settle_log()
        return rc

    def read_log(self, tail: int | None = None) -> str:
        """The log so far (last ``tail`` characters if given)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if tail is None else text[-tail:]

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = "new" if self._proc is None else f"pid={self._proc.pid} rc={self._proc.poll()}"
        return f"<EngineProcess {state} log={self.log_path}>"


def wait_for_http_health(
    url: str,
    timeout: float,
    *,
    process: EngineProcess | None = None,
    interval: float = 0.25,
) -> float:
    """Poll ``url`` (e.g. ``http://127.0.0.1:8000/health``) until it answers 200.

    Returns the seconds waited. Raises ``TimeoutError`` after ``timeout`` s, or ``RuntimeError`` (with the
    log tail) as soon as ``process``, if given, has exited.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, max(0.1, deadline - time.monotonic()))) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if process is not None and process.returncode is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before {url} was healthy; "
                f"log {process.log_path}:\n{process.read_log(tail=3000)}"
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")
        time.sleep(interval)
