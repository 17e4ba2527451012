"""Build a tiny PEFT LoRA adapter for ``models/tiny-llama`` without torch (the frontend venv has none).

The layout is what vLLM's ``PEFTHelper`` / ``LoRAModel.from_local_checkpoint`` read: ``adapter_config.json``
plus ``adapter_model.safetensors`` with ``base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}
.weight`` for every layer. The safetensors file is written by hand (8-byte little-endian header length, a
JSON header of dtype/shape/byte offsets, then the raw float32 data). Weights are seeded random numbers big
enough that greedy output changes (the base model's own weights have std 0.02).
"""

from __future__ import annotations

import json
import random
import struct
from array import array
from pathlib import Path

TARGETS = ("q_proj", "v_proj")


def _config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], array]]) -> None:
    """*tensors*: name -> (shape, float32 ``array``), row-major."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name, (shape, data) in tensors.items():
        blob = data.tobytes()  # little-endian on every machine we run on
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def build_adapter(out: Path, model_dir: Path, *, rank: int = 8, alpha: int = 16, seed: int = 0,
                  scale: float = 0.15) -> Path:  # fmt: skip
    """Write an adapter into *out* (created) and return it."""
    cfg = _config(model_dir)
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
    out_dims = {
        "q_proj": cfg["num_attention_heads"] * head_dim,
        "v_proj": cfg["num_key_value_heads"] * head_dim,
    }
    rng = random.Random(seed)

    def weights(n: int) -> array:
        return array("f", (rng.gauss(0.0, scale) for _ in range(n)))

    tensors: dict[str, tuple[list[int], array]] = {}
    for layer in range(cfg["num_hidden_layers"]):
        for module in TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = ([rank, hidden], weights(rank * hidden))
            tensors[f"{prefix}.lora_B.weight"] = ([out_dims[module], rank], weights(out_dims[module] * rank))
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "adapter_model.safetensors", tensors)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model_dir),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(TARGETS),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out
