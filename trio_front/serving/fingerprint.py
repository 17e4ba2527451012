"""``system_fingerprint``: vLLM's ``--fingerprint-mode`` (``entrypoints/serve/utils/fingerprint.py``).

* ``full`` (vLLM's default): ``vllm-<engine version>[-tpN][-ppN][-dpN]-<hash8>``;
* ``hash``: ``vllm-<engine version>-<hash8>``;
* ``custom``: ``--fingerprint-value`` as given;
* ``none``: null.

vLLM's hash8 is ``vllm_config.compute_hash()``, which needs vLLM's whole engine configuration; a frontend
only sees the model's files and the engine's registration, so ours hashes those (the model's config.json,
the engine's dtype, context length and block size). It changes when they do, which is what a client comparing
fingerprints wants to know; it is not equal to vLLM's string.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from trio_front.engine import wire

MODES = ("full", "hash", "custom", "none")


def system_fingerprint(
    mode: str, custom_value: str | None, registration: wire.EngineRegistration, model_dir: str | Path
) -> str | None:
    if mode == "none":
        return None
    if mode == "custom":
        return custom_value
    digest = hashlib.sha256()
    try:
        digest.update((Path(model_dir) / "config.json").read_bytes())
    except OSError:
        digest.update(str(model_dir).encode())
    for value in (registration.dtype, registration.max_model_len, registration.block_size):
        digest.update(f"|{value}".encode())
    parts = [f"vllm-{registration.vllm_version}"]
    if mode == "full":
        for prefix, size in (
            ("tp", registration.tensor_parallel_size),
            ("pp", registration.pipeline_parallel_size),
            ("dp", registration.data_parallel_size),
        ):
            if size > 1:
                parts.append(f"{prefix}{size}")
    parts.append(digest.hexdigest()[:8])
    return "-".join(parts)
