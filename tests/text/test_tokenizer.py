"""Tokenizer: BOS handling, special ids, decode, and the inline/threaded split of encode_async with its
cancellation behaviour."""

from __future__ import annotations

import threading
import time

import attrs
import pytest
import trio

from trio_front.text import tokenizer as tokenizer_module
from trio_front.text.tokenizer import FAST_INLINE_ENCODE_MAX_CHARS, Tokenizer


def test_fastokens_encodes_the_bundled_model_inline_up_to_its_bound(tokenizer: Tokenizer) -> None:
    assert tokenizer.encoder is not tokenizer.backend
    assert tokenizer.inline_max_chars == FAST_INLINE_ENCODE_MAX_CHARS


def test_special_ids(tokenizer: Tokenizer) -> None:
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 3)
    assert tokenizer.all_special_ids == {0, 1, 2, 3}
    assert tokenizer.vocab_size == 4096
    assert tokenizer.added_tokens[2] == "</s>"


def test_bos_from_post_processor(tokenizer: Tokenizer) -> None:
    plain = tokenizer.encode("hello world", add_special_tokens=False)
    assert tokenizer.encode("hello world") == [1, *plain]
    # Special tokens written in the text are matched whole, whatever add_special_tokens says.
    assert tokenizer.encode("</s>x", add_special_tokens=False)[0] == 2


def test_decode(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("héllo wörld 你好 🙂</s>")
    assert tokenizer.decode(ids) == "héllo wörld 你好 🙂"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<s>héllo wörld 你好 🙂</s>"
    assert tokenizer.convert_ids_to_tokens([1, 5000]) == ["<s>", None]
    assert tokenizer.convert_ids_to_tokens([1, 2], skip_special_tokens=True) == []


async def test_encode_async_short_is_inline(tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("short texts must not hop to a thread")

    monkeypatch.setattr(trio.to_thread, "run_sync", no_threads)
    text = "x" * tokenizer.inline_max_chars
    assert await tokenizer.encode_async(text, add_special_tokens=True) == tokenizer.encode(text)


async def test_encode_async_long_uses_thread(tokenizer: Tokenizer) -> None:
    text = "def f(x):\n    return x + 1  # héllo 🙂\n" * 1000
    assert len(text) > tokenizer.inline_max_chars
    for special in (True, False):
        assert await tokenizer.encode_async(text, add_special_tokens=special) == tokenizer.encode(
            text, special
        )
    many = ["short", text, "</s> tail"]
    assert await tokenizer.encode_many(many, add_special_tokens=False) == [
        tokenizer.encode(t, False) for t in many
    ]
    assert await tokenizer.encode_many(["a", "b"]) == [tokenizer.encode("a"), tokenizer.encode("b")]


class _BlockingBackend:
    """Stands in for tokenizers.Tokenizer: encode_batch blocks until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[object]:
        self.started.set()
        self.release.wait(10)
        self.finished.set()
        return []


async def test_cancel_during_long_encode_returns_promptly(tokenizer: Tokenizer) -> None:
    backend = _BlockingBackend()
    blocking = attrs.evolve(tokenizer, encoder=backend)
    start = time.monotonic()
    with trio.move_on_after(0.2) as scope:
        await blocking.encode_async("y" * (tokenizer.inline_max_chars + 1), add_special_tokens=True)
    elapsed = time.monotonic() - start
    assert scope.cancelled_caught
    assert backend.started.is_set() and not backend.finished.is_set()
    assert elapsed < 1.0
    # The abandoned thread keeps its limiter token until it finishes, then gives it back.
    assert tokenizer_module.TOKENIZE_LIMITER.borrowed_tokens == 1
    backend.release.set()
    with trio.fail_after(5):
        # Polling: the limiter offers no event for "a token came back" (and may have spare tokens).
        while tokenizer_module.TOKENIZE_LIMITER.borrowed_tokens:
            await trio.sleep(0.01)
    assert backend.finished.is_set()
