"""The workloads (W1–W5): load-generator specs per engine and mode (full or ``--quick``).

Each :class:`Workload` becomes one load-generator process against a running (frontend, engine) pair.
W1/W2 (W1t, W6: text and chat prompts; VB*: ``vllm bench serve`` as the load generator) run on both
engines; W3–W5 stress only the frontend and need the mock engine (W3 its event log,
W5 its ``max_num_seqs=1`` queue), so they run on the mock only.

Workloads run in pair *groups*, each group on its own fresh pairs: ``main`` (W1, W2, W3), ``mem`` (W4:
memory is measured from a fresh process, not on top of the high-water mark W2 left), ``idle`` (W5, with
the engine flags in ``W5_ENGINE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.peers import EngineConfig
from trio_front.engine.launch import TINY_MODEL_DIR

#: Engine flags for every W1–W4 pair (both engines, all frontends).
MAX_NUM_SEQS = 256
#: W5 pairs: one running slot, so every stream after the blocker waits in the engine (idle).
W5_ENGINE = {"max_num_seqs": 1, "step_ms": 20.0}


@dataclass
class Workload:
    key: str  # result key, e.g. "W2c256"
    family: str  # W1..W5 (what --workloads selects)
    title: str
    spec: dict[str, Any] = field(default_factory=dict)
    engines: tuple[str, ...] = ("mock", "real")
    grace_s: float = 0.0  # wait after the load before reading the engine log (W3)
    group: str = "main"  # main | mem | idle: which fresh pairs run it


GROUPS = ("main", "mem", "idle")


def workloads(engine: str, quick: bool) -> list[Workload]:
    """Every workload for *engine* (``mock`` or ``real``) in run order."""
    q = quick
    w1_n = (128 if q else 400) if engine == "real" else (2000 if q else 8000)
    out = [
        Workload(
            "W1", "W1", "preprocess-heavy: 1024-token prompts, 1 output token, concurrency 64",
            {"kind": "stream", "prompt_len": 1024, "max_tokens": 1, "concurrency": 64,
             "num_requests": w1_n, "warmup_requests": 32 if q else 64, "seed": 11},
        ),
        Workload(
            "W1t", "W1T", "text prompts: 1024-token text completions, 1 output token, concurrency 64",
            {"kind": "stream", "prompt_kind": "text", "prompt_len": 1024, "max_tokens": 1, "concurrency": 64,
             "num_requests": w1_n, "warmup_requests": 32 if q else 64, "seed": 12,
             "tokenizer_dir": str(TINY_MODEL_DIR)},
        ),
        Workload(
            "W6", "W6", "chat, templated: 4-turn conversations of ~1.9k tokens, 16 out, concurrency 64",
            {"kind": "stream", "prompt_kind": "chat", "path": "/v1/chat/completions", "turns": 4,
             "prompt_len": 1900, "max_tokens": 16, "concurrency": 64,
             "num_requests": (64 if q else 200) if engine == "real" else (1000 if q else 3000),
             "warmup_requests": 32 if q else 64, "seed": 61, "tokenizer_dir": str(TINY_MODEL_DIR)},
        ),
        Workload(
            "VB1t", "VB", "vllm bench serve: W1t's shape (random text, 1024 in, 1 out, c=64)",
            {"kind": "vllm-bench", "prompt_len": 1024, "max_tokens": 1, "concurrency": 64,
             "num_requests": (128 if q else 400) if engine == "real" else (1000 if q else 4000), "seed": 13},
        ),
        Workload(
            "VB2", "VB", "vllm bench serve: W2's shape (random text, 32 in, 128 out, c=256)",
            {"kind": "vllm-bench", "prompt_len": 32, "max_tokens": 128, "concurrency": 256,
             "num_requests": 512 if q else 1024, "seed": 23},
        ),
        Workload(
            "W2c256", "W2", "decode-streaming: 32 in, 128 out, concurrency 256",
            {"kind": "stream", "prompt_len": 32, "max_tokens": 128, "concurrency": 256,
             "num_requests": 512 if q else 1024, "warmup_requests": 128 if q else 256, "seed": 21,
             "records": True},
        ),
        Workload(
            "W2c1024", "W2", "decode-streaming: 32 in, 128 out, concurrency 1024",
            {"kind": "stream", "prompt_len": 32, "max_tokens": 128, "concurrency": 1024,
             "num_requests": 1024 if q else 2048, "warmup_requests": 128 if q else 256,
             "warmup_concurrency": 256, "seed": 22, "records": True},
        ),
        Workload(
            "W3", "W3", "cancellation storm: 256 streams closed after 1..16 chunks (1000 max_tokens)",
            {"kind": "cancel", "prompt_len": 32, "max_tokens": 1000, "concurrency": 256,
             "num_requests": 256 if q else 1024, "close_after_max": 16, "seed": 31, "tag": "w3x"},
            engines=("mock",), grace_s=3.0,
        ),
        Workload(
            "W4", "W4", "slow consumers: 100 streams read at 8 B/s (SO_RCVBUF 4 KiB), held past generation",
            {"kind": "slow", "prompt_len": 32, "max_tokens": 1000 if q else 2000, "concurrency": 100,
             "duration_s": 20.0 if q else 60.0, "read_bytes": 4, "read_interval_s": 0.5, "seed": 41,
             "warmup_requests": 32},
            engines=("mock",), group="mem",
        ),
        Workload(
            "W5", "W5", "idle streams: RSS per open stream queued behind one blocker (max_num_seqs=1)",
            {"kind": "idle", "prompt_len": 32, "max_tokens": 16,
             "levels": [64, 128, 256] if q else [128, 256, 512, 1024], "blocker_max_tokens": 2000,
             "seed": 51},
            engines=("mock",), group="idle",
        ),
    ]  # fmt: skip
    return [w for w in out if engine in w.engines]


def engine_config(engine: str, group: str = "main") -> EngineConfig:
    """The engine flags of a pair (``idle`` pairs use :data:`W5_ENGINE`)."""
    if group == "idle":
        return EngineConfig(kind=engine, **W5_ENGINE)  # type: ignore[arg-type]
    return EngineConfig(kind=engine, max_num_seqs=MAX_NUM_SEQS)


def slot_order(frontends: list[str], rounds: int) -> list[tuple[int, str]]:
    """``(round, frontend)`` in alternating order: A B C, then C B A, then A B C ..."""
    out = []
    for r in range(rounds):
        seq = frontends if r % 2 == 0 else list(reversed(frontends))
        out.extend((r, f) for f in seq)
    return out
