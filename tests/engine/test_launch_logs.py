"""Where the logs of started processes go (``engine/launch.py``): a per-run directory; a log is deleted when
its process ends cleanly and kept, its path logged, when it fails. No engine is started here: a tiny
Python child stands in (the rules do not depend on what runs)."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import pytest

from trio_front.engine.launch import EngineProcess, run_log_dir


def _files() -> set[Path]:
    """Every log a process start could leave: the old place (``$TMPDIR/vllm-*.log``) and the run dirs."""
    tmp = Path(tempfile.gettempdir())
    return set(tmp.glob("vllm-*.log")) | set(tmp.glob("trio-front-logs-*/*"))


def _child(code: str) -> EngineProcess:
    return EngineProcess([sys.executable, "-c", code])


@pytest.fixture
def no_leftovers():  # type: ignore[no-untyped-def]
    before = _files()
    yield
    assert _files() - before == set(), "a test left a log behind"


def test_a_clean_exit_or_a_stop_deletes_the_log(no_leftovers) -> None:  # type: ignore[no-untyped-def]
    done = _child("print('hello from the child')").start()
    assert done.log_path.parent == run_log_dir()
    done.wait(30)
    assert "hello from the child" in done.read_log()
    assert done.terminate() == 0 and not done.failed
    assert not done.log_path.exists()

    stopped = _child("import time; print('up', flush=True); time.sleep(60)").start()
    assert stopped.terminate() == -15 and not stopped.failed  # we stopped it: a clean end
    assert not stopped.log_path.exists()

    killed = _child("import time; time.sleep(60)").start()
    killed.kill()  # a test simulating engine death
    assert not killed.failed and not killed.log_path.exists()


def test_a_failure_keeps_the_log_and_says_where(no_leftovers, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="trio_front.engine")
    failed = _child("import sys; print('the reason'); sys.exit(3)").start()
    failed.wait(30)
    try:
        assert failed.terminate() == 3 and failed.failed
        assert failed.log_path.exists() and "the reason" in failed.read_log()
        assert str(failed.log_path) in caplog.text and "exit status 3" in caplog.text
    finally:
        failed.log_path.unlink(missing_ok=True)

    kept = _child("pass").start()  # status 0, but its owner needed it running (serve's engine supervisor)
    kept.wait(30)
    kept.keep_log()
    try:
        kept.terminate()
        assert kept.log_path.exists()
    finally:
        kept.log_path.unlink(missing_ok=True)


def test_a_given_log_path_is_the_callers(tmp_path: Path, no_leftovers) -> None:  # type: ignore[no-untyped-def]
    given = tmp_path / "mine.log"
    process = EngineProcess([sys.executable, "-c", "print('kept')"], log_path=given).start()
    process.wait(30)
    process.terminate()
    assert given.read_text().strip() == "kept"
