"""The model's tokenizer: HF ``tokenizers`` plus the special-token facts from the model's config files.

`Tokenizer.encode` gives the ids ``transformers``' ``PreTrainedTokenizerFast.encode`` (what vLLM calls)
gives for the same text and ``add_special_tokens``: the ``tokenizer.json`` pipeline, its post-processor
deciding about BOS/EOS, no truncation or padding, special tokens in the text matched as special tokens.

Encoding is done by ``fastokens`` (the Rust tokenizer vllm-rs uses) when it loads the same
``tokenizer.json`` and gives HF ``tokenizers``' ids on every probe text (`_PROBES`, each added token in
context, with and without special tokens); otherwise, with a warning, by HF ``tokenizers``. On the bundled
model a fresh 1024-token text costs 126 µs instead of 1.1 ms (``tests/text/test_fastokens_parity.py``
proves the ids equal on every tokenizer the project ships or tests). ``TRIO_FRONT_ENCODER=hf`` forces HF
``tokenizers``. Decoding always uses HF ``tokenizers`` (the detokenizer's ``DecodeStream``).

Threads and the GIL (docs/trio_stack.md §5.3): HF ``tokenizers.Tokenizer.encode`` holds the GIL, while
``encode_batch`` releases it; fastokens releases it in both. A thread hop costs ~130 µs, so texts are
encoded inline up to `Tokenizer.inline_max_chars` (about what 130 µs of encoding covers: 1024
characters for HF ``tokenizers``, 16384 for fastokens), longer ones with ``encode_batch([text])`` in a
worker thread (`encode_async`). The wrapped tokenizers are configured once in
`Tokenizer.from_model_files` and never mutated afterwards: mutating one while a worker thread borrows it
raises ``RuntimeError: Already borrowed``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import fastokens
import tokenizers
import trio

from trio_front.text.model_files import ModelFiles, load_model_files

log = logging.getLogger("trio_front.text")

#: With HF ``tokenizers``, texts up to this many characters are encoded inline; longer ones in a worker
#: thread. ~4 characters per token for English/code, so this is ~250 tokens, where encoding (~1 µs/token)
#: starts to cost more than the ~130 µs thread round trip and would stall every other request on the loop.
INLINE_ENCODE_MAX_CHARS: Final = 1024
#: The same bound with fastokens, ~8x faster per character (~30 ns): ~130 µs of encoding inline at most.
FAST_INLINE_ENCODE_MAX_CHARS: Final = 16384
#: ``hf`` forces HF ``tokenizers`` for encoding (default ``auto``: fastokens when it agrees on the probes).
ENCODER_ENV: Final = "TRIO_FRONT_ENCODER"

#: Texts both encoders must agree on before fastokens is used (with the model's added tokens, in
#: `_probe_texts`): whitespace runs, digits, code, accents, CJK, emoji, control and replacement characters,
#: byte-fallback and metaspace corners.
_PROBES: Final = (
    "",
    " ",
    "  x",
    "\n\n",
    "Hello, world! It's a test; isn't it? (yes)",
    "   leading spaces and trailing   ",
    "\t\tdef f(x):\n    return x ** 2  # ok\n",
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
    "1234567890 3.14159 -42 1e-9 0x1F",
    "café naïve résumé Ångström",
    "日本語のテキストと中文字符",
    "emoji 💡🚀 ✓ ∑ and ZWJ 👩‍💻",
    "\x00\x01\x7f control",
    "\ufffd replacement",
    "\u2581x \u2581\u2581 metaspace",
    "a\r\nb\rc",
    "URL https://example.com/a?b=c&d=e#f",
)

#: Bounds how many tokenizer threads run at once, for every `Tokenizer` in the process: tokenization must
#: not take every core from the event loop and the engine. A cancelled caller returns at once, but its
#: thread keeps its token until the encode finishes, so abandoned work cannot pile up unbounded.
TOKENIZE_LIMITER: Final = trio.CapacityLimiter(max(1, min(4, (os.cpu_count() or 2) // 2)))

# transformers' ``clean_up_tokenization`` replacements, in its order.
_CLEANUPS: Final = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def _clean_up_tokenization(text: str) -> str:
    for old, new in _CLEANUPS:
        text = text.replace(old, new)
    return text


@attrs.frozen(eq=False)
class Tokenizer:
    """An immutable tokenizer, safe to share between tasks and threads. Build it with `from_model_files`
    or `from_pretrained`.

    ``special_tokens``: named special tokens (``"bos_token" -> "<s>"``); ``all_special_ids``: ids of named
    plus extra special tokens (transformers' ``all_special_ids``); ``added_tokens``: every added token id
    -> content (special or not), used for ``spaces_between_special_tokens=False``.
    """

    backend: tokenizers.Tokenizer = attrs.field(repr=False)
    #: what encodes: a ``fastokens.Tokenizer`` or *backend* itself (the same ``encode``/``encode_batch``)
    encoder: Any = attrs.field(repr=False)
    #: texts up to this many characters are encoded inline, longer ones in a worker thread
    inline_max_chars: int
    files: ModelFiles = attrs.field(repr=False)
    special_tokens: dict[str, str]
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    unk_token_id: int | None
    all_special_ids: frozenset[int]
    added_tokens: dict[int, str] = attrs.field(repr=False)
    vocab_size: int
    max_token_id: int
    max_chars_per_token: int
    _cleanup: bool = attrs.field(alias="cleanup", repr=False)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load from a model directory (see `load_model_files`)."""
        return cls.from_model_files(load_model_files(path))

    @classmethod
    def from_model_files(cls, files: ModelFiles) -> Tokenizer:
        backend = tokenizers.Tokenizer.from_file(str(files.tokenizer_json))
        # transformers disables truncation/padding on every plain encode call; do it once here.
        backend.no_truncation()
        backend.no_padding()
        # Like transformers, register named/extra special tokens that tokenizer.json lacks, so they are
        # matched whole in text and skipped by skip_special_tokens.
        known = set(backend.get_vocab(with_added_tokens=True))
        missing = [
            tokenizers.AddedToken(tok, special=True)
            for tok in dict.fromkeys((*files.special_tokens.values(), *files.extra_special_tokens))
            if tok not in known
        ]
        if missing:
            backend.add_special_tokens(missing)
        vocab = backend.get_vocab(with_added_tokens=True)

        def token_id(attr: str) -> int | None:
            token = files.special_tokens.get(attr)
            return None if token is None else backend.token_to_id(token)

        encoder = _fast_encoder(backend, str(files.tokenizer_json))
        special_strings = (*files.special_tokens.values(), *files.extra_special_tokens)
        special_ids = frozenset(i for i in (backend.token_to_id(t) for t in special_strings) if i is not None)
        # BPE-specific: transformers skips clean_up_tokenization for BPE models (it corrupts them).
        model_is_bpe = type(backend.model).__name__ == "BPE"
        return cls(
            backend=backend,
            encoder=backend if encoder is None else encoder,
            inline_max_chars=FAST_INLINE_ENCODE_MAX_CHARS if encoder is not None else INLINE_ENCODE_MAX_CHARS,
            files=files,
            special_tokens=dict(files.special_tokens),
            bos_token_id=token_id("bos_token"),
            eos_token_id=token_id("eos_token"),
            pad_token_id=token_id("pad_token"),
            unk_token_id=token_id("unk_token"),
            all_special_ids=special_ids,
            added_tokens={i: tok.content for i, tok in backend.get_added_tokens_decoder().items()},
            vocab_size=backend.get_vocab_size(with_added_tokens=True),
            # As vLLM's get_cached_tokenizer: the base vocab size may imply ids that get_vocab lacks.
            max_token_id=max(
                max(vocab.values(), default=0), backend.get_vocab_size(with_added_tokens=False) - 1
            ),
            max_chars_per_token=max((len(tok) for tok in vocab), default=0),
            cleanup=files.clean_up_tokenization_spaces and not model_is_bpe,
        )

    # ------------------------------------------------------------------------------------- encoding

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``. Holds the GIL for the whole call; prefer `encode_async` in async code."""
        return self.encoder.encode(text, add_special_tokens=add_special_tokens).ids

    async def encode_async(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """`encode` without blocking the event loop for long texts.

        Texts of at most `inline_max_chars` characters are encoded inline (no checkpoint is executed, so
        this call cannot raise ``Cancelled`` then). Longer texts are encoded in a worker thread under
        `TOKENIZE_LIMITER`; cancellation is honoured at once, while the thread finishes in the background
        and its result is dropped.
        """
        if len(text) <= self.inline_max_chars:
            return self.encode(text, add_special_tokens)
        return (await self._encode_batch_in_thread([text], add_special_tokens))[0]

    async def encode_many(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[int]]:
        """Encode several texts (e.g. a batch of completion prompts), in order. One thread hop for all of
        them when their total length exceeds `inline_max_chars` (``encode_batch`` also spreads the texts
        over cores); same cancellation behaviour as `encode_async`."""
        if sum(map(len, texts)) <= self.inline_max_chars:
            return [self.encode(text, add_special_tokens) for text in texts]
        return await self._encode_batch_in_thread(list(texts), add_special_tokens)

    async def _encode_batch_in_thread(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        call = functools.partial(self.encoder.encode_batch, texts, add_special_tokens=add_special_tokens)
        encodings = await trio.to_thread.run_sync(call, limiter=TOKENIZE_LIMITER, abandon_on_cancel=True)
        return [encoding.ids for encoding in encodings]

    # ------------------------------------------------------------------------------------- decoding

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, as transformers' ``decode`` (including ``clean_up_tokenization_spaces``,
        which transformers ignores for BPE models). Note: vLLM decodes prompts for ``echo`` with
        transformers' default, ``skip_special_tokens=False``."""
        text = self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up_tokenization(text) if self._cleanup else text

    def convert_ids_to_tokens(
        self, ids: Iterable[int], skip_special_tokens: bool = False
    ) -> list[str | None]:
        """Vocabulary strings (e.g. ``"Ġhello"``) of ``ids``; ``None`` for ids outside the vocabulary."""
        id_to_token = self.backend.id_to_token
        skip = self.all_special_ids if skip_special_tokens else frozenset()
        return [id_to_token(i) for i in ids if i not in skip]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)


def _probe_texts(backend: tokenizers.Tokenizer) -> list[str]:
    """`_PROBES`, plus each added token alone, between words and twice in a row."""
    added = [tok.content for tok in backend.get_added_tokens_decoder().values()]
    return [*_PROBES, *added, *(f"a {tok}b{tok}{tok} c" for tok in added)]


def _fast_encoder(backend: tokenizers.Tokenizer, source: str) -> Any | None:
    """A fastokens tokenizer built from *backend*'s configuration (its added tokens included), if it gives
    *backend*'s ids on every probe text with and without special tokens; else None (reason logged)."""
    mode = os.environ.get(ENCODER_ENV, "auto")
    if mode not in ("auto", "hf"):
        raise ValueError(f"{ENCODER_ENV}={mode!r}: expected 'auto' (fastokens where it agrees) or 'hf'")
    if mode == "hf":
        return None
    try:
        fast = fastokens.Tokenizer.from_json_str(backend.to_str())
    except Exception as exc:  # a pipeline fastokens does not implement
        log.warning("encoding with HF tokenizers: fastokens cannot load %s (%s)", source, exc)
        return None
    for text in _probe_texts(backend):
        for special in (True, False):
            want = backend.encode(text, add_special_tokens=special).ids
            if fast.encode(text, add_special_tokens=special).ids != want:
                log.warning(
                    "encoding with HF tokenizers: fastokens disagrees on %r (add_special_tokens=%s) for %s",
                    text,
                    special,
                    source,
                )
                return None
    return fast
