"""Asking vLLM's own code (in the engine venv) for the reference answer of a parity test.

:func:`run_in_engine_venv` runs a script (``[path]`` or ``["-c", code]``) with the engine venv's python,
feeds it *payload* as JSON on stdin and returns its last stdout line decoded as JSON. Without the engine
venv a test is skipped locally; with ``CI`` set that is a failure (CI installs the venv, so a skip there
would hide a broken set-up). A failing script raises with the tail of its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from trio_front.engine.launch import EngineNotInstalledError, engine_env, find_engine_python


def run_in_engine_venv(
    args: Sequence[str],
    payload: Any = None,
    *,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> Any:
    try:
        python = find_engine_python()
    except EngineNotInstalledError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"vLLM engine venv not installed: {exc}")
    environment = engine_env()
    environment["VLLM_LOGGING_LEVEL"] = "ERROR"
    environment.update(env or {})
    proc = subprocess.run(
        [str(python), *args],
        input=None if payload is None else json.dumps(payload),
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"engine-venv script {args[0]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
