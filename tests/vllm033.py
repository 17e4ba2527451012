"""vLLM 0.33's own Python classes for conformance tests, read from the PyPI ``vllm==0.33.0`` wheel.

The wheel is fetched (never installed) by ``bench/peers.py``'s :func:`~bench.peers.ensure_vllm_rs`, which
keeps it in ``bench/.cache/wheel`` beside the extracted ``vllm-rs`` binary; here its ``vllm/**.py`` files
are unpacked once into ``bench/.cache/vllm-0.33.0-src``. :func:`run_with_vllm033` runs a script with the
engine venv's python (torch, msgspec, numpy) and that directory first on ``PYTHONPATH``, so ``import vllm``
there is 0.33's pure-Python source (its compiled extensions are not needed for the msgspec classes).
Without the engine venv the test is skipped locally and fails in CI (:mod:`tests.vllm_oracle`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bench.peers import CACHE, VLLM_RS_VERSION, ensure_vllm_rs
from tests.vllm_oracle import run_in_engine_venv
from trio_front.engine.launch import EngineNotInstalledError, find_engine_python

VERSION = VLLM_RS_VERSION  # the wheel bench/peers.py fetches: vllm==0.33.0
SOURCE = CACHE / f"vllm-{VERSION}-src"


def wheel_path(timeout: float = 900.0) -> Path:
    """The cached 0.33 wheel, downloading it (``ensure_vllm_rs``) when it is not there yet."""
    wheel_dir = CACHE / "wheel"
    wheels = sorted(wheel_dir.glob(f"vllm-{VERSION}-*.whl"))
    if not wheels:
        ensure_vllm_rs(timeout=timeout)
        wheels = sorted(wheel_dir.glob(f"vllm-{VERSION}-*.whl"))
    if not wheels:  # the binary was cached without its wheel: fetch the wheel alone
        wheel_dir.mkdir(parents=True, exist_ok=True)
        pip = [str(find_engine_python()), "-m", "pip", "download", "--no-deps", f"vllm=={VERSION}"]
        subprocess.run([*pip, "-d", str(wheel_dir)], check=True, timeout=timeout, capture_output=True)
        wheels = sorted(wheel_dir.glob(f"vllm-{VERSION}-*.whl"))
    if not wheels:
        raise RuntimeError(f"no vllm-{VERSION} wheel in {wheel_dir} after pip download")
    return wheels[-1]


def source_dir() -> Path:
    """A directory holding 0.33's ``vllm`` package (Python files only), unpacked once (atomically)."""
    if (SOURCE / "vllm" / "v1" / "engine" / "__init__.py").is_file():
        return SOURCE
    tmp = SOURCE.with_name(SOURCE.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel_path()) as zf:
        for name in zf.namelist():
            if name.startswith("vllm/") and name.endswith(".py"):
                zf.extract(name, tmp)
    shutil.rmtree(SOURCE, ignore_errors=True)
    tmp.rename(SOURCE)
    return SOURCE


def run_with_vllm033(args: list[str], payload: Any = None, *, timeout: float = 300) -> Any:
    """:func:`~tests.vllm_oracle.run_in_engine_venv` with vLLM 0.33's source shadowing the venv's 0.32."""
    try:
        find_engine_python()  # the download uses the venv's pip: skip (locally) before trying it
    except EngineNotInstalledError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"vLLM engine venv not installed: {exc}")
    return run_in_engine_venv(args, payload, timeout=timeout, env={"PYTHONPATH": str(source_dir())})
