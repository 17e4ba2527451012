#!/usr/bin/env python3
"""Build the bundled tiny Llama model in ``models/tiny-llama/``.

Two modes:

``--train-tokenizer``
    Train a byte-level BPE tokenizer (vocab 4096) on CPython's stdlib ``*.py`` files and write every
    committed text file of the model directory (tokenizer, configs, chat template). This was run once;
    its output is committed, and the code stays here so the files can be reproduced. Needs the
    ``tokenizers`` package. Byte-identical output needs the same CPython stdlib (3.11.7) and
    ``tokenizers`` (0.23.3) versions.

default
    Write ``model.safetensors`` with seeded random weights (numpy RNG seed 0). Needs only numpy, so
    it runs in either venv. Idempotent: a file of the expected size is left alone. The weights file is
    gitignored; ``scripts/setup_engine.sh`` runs this mode.

The model is gibberish by design. Greedy decoding is deterministic because the weights are fixed and
stored as float32 (a wider top-1/top-2 logit margin relative to rounding error than bfloat16).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "models" / "tiny-llama"

VOCAB_SIZE = 4096
HIDDEN = 256
LAYERS = 2
HEADS = 4
KV_HEADS = 4
HEAD_DIM = HIDDEN // HEADS  # 64: the CPU attention kernel rejects head_dim 16
INTERMEDIATE = 512
MAX_POS = 4096
SEED = 0
STD = 0.02

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0..3, in this order
UNK, BOS, EOS, PAD = SPECIAL_TOKENS

# HF-style template. Content parts (lists) are joined so OpenAI multi-part text messages render too.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set content = message['content'] %}"
    "{% else %}{% set content = message['content'] | map(attribute='text') | join('') %}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ content }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _dump_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- tokenizer


def stdlib_sources() -> list[Path]:
    """The training corpus: stdlib ``*.py`` in sorted order, without site-packages and test suites."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def train_tokenizer(out: Path) -> None:
    """Train the tokenizer and write tokenizer.json (Llama-like: ``<s>`` prepended, byte-level decoder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    files = stdlib_sources()
    tok = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus():
        for p in files:
            # Decode leniently: a handful of stdlib files are latin-1; replacement keeps it deterministic.
            yield p.read_bytes().decode("utf-8", errors="replace")

    tok.train_from_iterator(corpus(), trainer=trainer, length=len(files))
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    assert (tok.token_to_id(UNK), bos_id, eos_id, tok.token_to_id(PAD)) == (0, 1, 2, 3)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, bos_id)],
    )
    tok.save(str(out / "tokenizer.json"))
    print(f"tokenizer: trained on {len(files)} files, vocab {tok.get_vocab_size()}")


def write_text_files(out: Path) -> None:
    """Write the configs, special-token map and chat template (everything committed except tokenizer.json)."""
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    _dump_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added,
            "bos_token": BOS,
            "eos_token": EOS,
            "unk_token": UNK,
            "pad_token": PAD,
            "clean_up_tokenization_spaces": False,
            "model_max_length": MAX_POS,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
        },
    )
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    _dump_json(
        out / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD},
    )
    _dump_json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "head_dim": HEAD_DIM,
            "hidden_act": "silu",
            "max_position_embeddings": MAX_POS,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "initializer_range": STD,
            "vocab_size": VOCAB_SIZE,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 3,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "use_cache": True,
        },
    )
    _dump_json(
        out / "generation_config.json",
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3},
    )


# ------------------------------------------------------------------------------------------------ weights


def weight_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of the model, named exactly as HF Llama / vLLM's LlamaForCausalLM loader expects."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (VOCAB_SIZE, HIDDEN))]
    kv = KV_HEADS * HEAD_DIM
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)),
            (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)),
            (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
        ]
    shapes += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB_SIZE, HIDDEN))]
    return shapes


def _header(shapes: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """The safetensors JSON header (F32, offsets in declaration order), space-padded to 8 bytes."""
    meta: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes:
        n = 4
        for d in shape:
            n *= d
        meta[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(meta, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8)


def expected_size() -> int:
    shapes = weight_shapes()
    data = sum(4 * _numel(s) for _, s in shapes)
    return 8 + len(_header(shapes)) + data


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_weights(path: Path, force: bool = False) -> None:
    """Write random weights: N(0, 0.02) for matrices, ones for RMSNorm weights (so activations stay sane)."""
    if not force and path.exists() and path.stat().st_size == expected_size():
        print(f"weights: {path} already present ({path.stat().st_size} bytes), skipping")
        return
    import numpy as np

    rng = np.random.default_rng(SEED)
    shapes = weight_shapes()
    header = _header(shapes)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for name, shape in shapes:
            if name.endswith("norm.weight"):
                arr = np.ones(shape, dtype="<f4")
            else:
                arr = (rng.standard_normal(shape, dtype=np.float32) * STD).astype("<f4")
            f.write(arr.tobytes(order="C"))
    tmp.replace(path)  # atomic: a half-written file never passes the size check
    print(f"weights: wrote {path} ({path.stat().st_size} bytes)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory (default: %(default)s)")
    ap.add_argument("--train-tokenizer", action="store_true", help="(re)train tokenizer, rewrite text files")
    ap.add_argument("--force", action="store_true", help="rewrite weights even if present")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.train_tokenizer:
        train_tokenizer(args.out)
        write_text_files(args.out)
    else:
        write_weights(args.out / "model.safetensors", force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
