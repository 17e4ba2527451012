"""fastokens encodes exactly as HF ``tokenizers`` on every tokenizer the project ships or tests, and the
text layer falls back to HF ``tokenizers`` when it would not (``text/tokenizer.py``)."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import fastokens
import pytest
import tokenizers

from tests.api.test_logprobs_shapes import metaspace_model
from tests.parsers import test_reasoning, test_tools_a, test_tools_b
from tests.parsers.harness import marker_model
from trio_front.text import tokenizer as tokenizer_module
from trio_front.text.tokenizer import Tokenizer

from .conftest import TINY_MODEL


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "tiny-llama": TINY_MODEL,
        "metaspace": metaspace_model(tmp_path_factory.mktemp("metaspace")),
        "tool markers": marker_model(test_tools_a.TOKENS_V11),
        "glm markers": marker_model(test_tools_b.MARKERS),
        "reasoning markers": marker_model(test_reasoning.TOKENS),
        "special markers": marker_model(test_reasoning.TOKENS, special=True),
    }


def texts(hf: tokenizers.Tokenizer, seed: int = 7) -> list[str]:
    """Random-id texts (as ``vllm bench serve`` makes prompts), the same with added tokens spliced in, and
    random code points from every plane the probes name."""
    rng = random.Random(seed)
    vocab = hf.get_vocab_size(with_added_tokens=False)
    added = [t.content for t in hf.get_added_tokens_decoder().values()]
    out = []
    for _ in range(300):
        text = hf.decode([rng.randrange(4, vocab) for _ in range(rng.randint(1, 400))])
        out.append(text)
        cut = rng.randint(0, len(text))
        out.append(text[:cut] + rng.choice(added) + text[cut:] + rng.choice(added))
    planes = [(32, 126), (0xA0, 0x2FFF), (0x4E00, 0x4FFF), (0x1F300, 0x1F5FF), (9, 13), (0x2581, 0x2581)]
    for _ in range(300):
        chars = [chr(rng.randint(*rng.choice(planes))) for _ in range(rng.randint(1, 120))]
        out.append("".join(chars))
    return out


@pytest.mark.parametrize(
    "name", ["tiny-llama", "tool markers", "glm markers", "reasoning markers", "special markers"]
)
def test_the_same_ids_as_hf_tokenizers(models: dict[str, Path], name: str) -> None:
    tok = Tokenizer.from_pretrained(models[name])
    assert isinstance(tok.encoder, fastokens.Tokenizer)  # the probes passed: fastokens encodes
    fast = fastokens.Tokenizer.from_file(str(models[name] / "tokenizer.json"))
    hf = tok.backend
    cases = texts(hf)
    mismatches = [
        (text, special)
        for text in cases
        for special in (True, False)
        if hf.encode(text, add_special_tokens=special).ids != tok.encode(text, special)
        or tok.encode(text, special) != fast.encode(text, add_special_tokens=special).ids
    ]
    assert mismatches == [], mismatches[:3]
    assert len(cases) == 900


def test_a_metaspace_vocabulary_encodes_with_hf(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """fastokens 0.3 has no Metaspace pre-tokenizer (SentencePiece-style vocabularies: Llama 2, Mistral)."""
    caplog.set_level(logging.WARNING, logger="trio_front.text")
    tok = Tokenizer.from_pretrained(models["metaspace"])
    assert tok.encoder is tok.backend
    assert "fastokens cannot load" in caplog.text and "Metaspace" in caplog.text
    assert tok.encode("Hello café") == tok.backend.encode("Hello café").ids


def test_a_disagreement_on_a_probe_falls_back_to_hf(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = fastokens.Tokenizer.from_json_str

    class Wrong:
        def __init__(self, fast: fastokens.Tokenizer) -> None:
            self.fast = fast

        def encode(self, text: str, add_special_tokens: bool = False) -> Any:
            ids = self.fast.encode(text, add_special_tokens=add_special_tokens).ids
            return fastokens._native.Encoding(ids[:-1] if "日本語" in text else ids)

    monkeypatch.setattr(fastokens.Tokenizer, "from_json_str", lambda s: Wrong(real(s)))
    caplog.set_level(logging.WARNING, logger="trio_front.text")
    tok = Tokenizer.from_pretrained(TINY_MODEL)
    assert tok.encoder is tok.backend
    assert tok.inline_max_chars == tokenizer_module.INLINE_ENCODE_MAX_CHARS
    assert "fastokens disagrees on '日本語" in caplog.text


def test_a_pipeline_fastokens_cannot_load_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(_: str) -> None:
        raise ValueError("unsupported normalizer")

    monkeypatch.setattr(fastokens.Tokenizer, "from_json_str", refuse)
    caplog.set_level(logging.WARNING, logger="trio_front.text")
    tok = Tokenizer.from_pretrained(TINY_MODEL)
    assert tok.encoder is tok.backend and "unsupported normalizer" in caplog.text


def test_the_environment_forces_hf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tokenizer_module.ENCODER_ENV, "hf")
    assert Tokenizer.from_pretrained(TINY_MODEL).encoder.__class__ is tokenizers.Tokenizer
    monkeypatch.setenv(tokenizer_module.ENCODER_ENV, "fastokens-please")
    with pytest.raises(ValueError, match="TRIO_FRONT_ENCODER"):
        Tokenizer.from_pretrained(TINY_MODEL)


async def test_threads_and_the_event_loop_encode_at_once() -> None:
    """encode_async's worker threads and inline encodes share one fastokens tokenizer (as HF tokenizers
    allow): no "Already borrowed" error, every result right."""
    import trio

    tok = Tokenizer.from_pretrained(TINY_MODEL)
    long = "hello world, some text here 123 ✓ " * 2000
    want_long, want_short = tok.backend.encode(long).ids, tok.backend.encode("short text").ids
    results: list[list[int]] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(lambda: _collect(tok, long, results))
        for _ in range(200):
            assert tok.encode("short text") == want_short
            await trio.sleep(0)
    assert results == [want_long] * 3


async def _collect(tok: Tokenizer, text: str, out: list[list[int]]) -> None:
    assert len(text) > tok.inline_max_chars  # a worker thread encodes it
    out.append(await tok.encode_async(text))
