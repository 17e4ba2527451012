"""Parity harness for the parsers: vLLM 0.32's own parsers, run in the engine venv, against ours.

``vllm_results(cases, tokens)`` builds a copy of the tiny model's tokenizer with the format's marker
tokens added (vLLM's parsers look their markers up in the vocabulary), runs ``oracle.py`` once in the
engine venv over every case and returns vLLM's answers, cached per process. ``chunkings(text)`` gives the
ways a test feeds one output to our streaming side: whole, per character, and random pieces (seeded).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.vllm_oracle import run_in_engine_venv

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-llama"
ORACLE = Path(__file__).with_name("oracle.py")
_CACHE: dict[str, list[Any]] = {}


def marker_model(tokens: Sequence[str], *, special: bool = False, dst: Path | None = None) -> Path:
    """A model directory: the tiny model's files with *tokens* added to the tokenizer (not special
    unless *special*, so they survive decoding), and ``vocab_size`` grown to match."""
    import tokenizers

    key = hashlib.sha1(json.dumps([list(tokens), special]).encode()).hexdigest()[:12]
    dst = dst or Path(tempfile.gettempdir()) / f"trio-front-markers-{key}"
    if (dst / "config.json").exists():
        return dst
    tmp = Path(tempfile.mkdtemp(prefix="markers-", dir=dst.parent))
    for f in TINY.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, tmp / f.name)
    tok = tokenizers.Tokenizer.from_file(str(TINY / "tokenizer.json"))
    added = [tokenizers.AddedToken(t, special=special, normalized=False) for t in tokens]
    if special:
        tok.add_special_tokens(added)
    else:
        tok.add_tokens(added)
    tok.save(str(tmp / "tokenizer.json"))
    config = json.loads((tmp / "config.json").read_text())
    config["vocab_size"] = max(config.get("vocab_size", 0), tok.get_vocab_size(with_added_tokens=True))
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    try:
        tmp.rename(dst)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def vllm_results(
    cases: Sequence[dict[str, Any]], tokens: Sequence[str], *, special: bool = False
) -> list[Any]:
    """vLLM's answer for each case (see ``oracle.py`` for the case shapes). Skips without the engine
    venv locally; in CI (``CI`` set) a missing venv is a failure."""
    model = marker_model(tokens, special=special)
    payload = {"model": str(model), "cases": list(cases)}
    key = hashlib.sha1(json.dumps(payload).encode()).hexdigest()
    if key not in _CACHE:
        _CACHE[key] = run_in_engine_venv([str(ORACLE)], payload)
    return _CACHE[key]


def chunkings(text: str, *, seeds: Iterable[int] = range(6)) -> list[list[str]]:
    """Whole, one character at a time, and random splits (1–12 chars) for each seed."""
    out = [[text], list(text)]
    for seed in seeds:
        rng = random.Random(seed)
        pieces, i = [], 0
        while i < len(text):
            n = rng.randint(1, 12)
            pieces.append(text[i : i + n])
            i += n
        out.append(pieces)
    return out


def token_chunkings(model: Path, text: str) -> list[str]:
    """*text* split at the marker model's token boundaries (what an engine's deltas look like)."""
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids
    pieces, prev = [], ""
    for i in range(1, len(ids) + 1):
        cur = tok.decode(ids[:i], skip_special_tokens=False)
        if cur.endswith("\ufffd"):
            continue  # an incomplete UTF-8 sequence: the detokenizer holds it back
        pieces.append(cur[len(prev) :])
        prev = cur
    if prev != text:
        pieces.append(text[len(prev) :]) if text.startswith(prev) else None
    return pieces
