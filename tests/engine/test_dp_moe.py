"""Data-parallel MoE engines need vLLM's DP coordinator (waves); ``run`` and ``serve`` start none, so they
refuse a MoE model with ``--data-parallel-size`` > 1 at start-up, naming the way that works. The expert
count is read from ``config.json`` with the keys vLLM reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trio_front.server import FrontendConfig, moe_data_parallel
from trio_front.text.model_files import load_model_files

from ..api.conftest import MODEL


def moe_copy(tmp_path: Path, **config: object) -> Path:
    dst = tmp_path / "moe"
    dst.mkdir()
    for f in MODEL.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    base = json.loads((MODEL / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**base, **config}))
    return dst


@pytest.mark.parametrize(
    ("config", "experts"),
    [
        ({"num_local_experts": 8}, 8),  # Mixtral
        ({"n_routed_experts": 64}, 64),  # DeepSeek
        ({"moe_num_experts": 16}, 16),  # Dbrx
        ({"text_config": {"num_experts": [4, 4]}}, 4),  # a multimodal config, a list as Ernie VL writes it
        ({"num_experts": 0, "num_local_experts": 0}, 0),
        ({"num_experts": 0, "num_local_experts": 8}, 0),  # the first key present wins, as in vLLM
        ({}, 0),
    ],
)
def test_experts_as_vllm_reads_them(tmp_path: Path, config: dict, experts: int) -> None:
    assert load_model_files(moe_copy(tmp_path, **config)).num_experts == experts


def test_dense_models_and_the_drop_in_pass(tmp_path: Path) -> None:
    moe = moe_copy(tmp_path, num_local_experts=8)
    moe_data_parallel(FrontendConfig(engine_addr="tcp://127.0.0.1:1", model=MODEL, data_parallel_size=2))
    moe_data_parallel(FrontendConfig(engine_addr="tcp://127.0.0.1:1", model=moe, data_parallel_size=1))
    with_coordinator = FrontendConfig(
        engine_addr="tcp://127.0.0.1:1", model=moe, data_parallel_size=2, coordinator_address="tcp://h:1"
    )
    moe_data_parallel(with_coordinator)


def test_run_refuses_moe_with_data_parallel(tmp_path: Path) -> None:
    moe = moe_copy(tmp_path, num_local_experts=8)
    done = subprocess.run(
        [sys.executable, "-m", "trio_front.cli", "run", "--engine-addr", "tcp://127.0.0.1:1",
         "--model", str(moe), "--data-parallel-size", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "MoE model (8 experts per layer" in done.stderr and "vllm serve" in done.stderr, done.stderr
