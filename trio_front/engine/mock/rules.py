"""The mock engine's deterministic "model": which token comes next, when a request stops, fake logprobs.

Everything here is a pure function of the request, so a test can predict the engine's output exactly.
With a script loaded (:mod:`.script`, whose docstring has the file format) a matching prompt's output is
the script's ids and then EOS instead; the stopping, masking and logprob rules below still apply.

**Token rule.** With ``FIRST = 4`` (ids 0..3 are the usual ``<unk> <s> </s> <pad>`` specials) and
``span = vocab - FIRST``, the ordinary token at output position ``i`` (0-based) is::

    key = (31 * sum(prompt_ids) + len(prompt_ids)) % span
    mock_token(prompt_ids, i, vocab) = FIRST + (key + 7 * i) % span

so the rule never produces a special id, and it does not repeat within ``span / gcd(7, span)`` positions
(4092 for the tiny model's vocab of 4096, longer than any output the default ``max_model_len`` allows).

**EOS rule.** A request whose ``SamplingParams.seed`` is ``EOS_SEED_BASE + K`` (``0 <= K < 10**6``) "wants"
EOS from position ``K`` on: it emits ``K`` ordinary tokens, then its ``_eos_token_id`` (finish STOP,
``stop_reason`` None; the EOS id is part of ``new_token_ids``, as in vLLM). Any other seed, or no seed,
never produces EOS unless an ordinary token happens to equal ``_eos_token_id``. Without an
``_eos_token_id`` (or with ``ignore_eos``, see below) the EOS rule yields the ordinary token instead.

**Masking (``min_tokens``).** Like vLLM's sampler, while fewer than ``min_tokens`` tokens were generated
no id in ``{_eos_token_id} ∪ stop_token_ids ∪ _all_stop_token_ids`` can be produced: the EOS rule yields
the ordinary token, and an ordinary token in that set is replaced by the next id upward (wrapping within
``FIRST..vocab-1``) outside it. So with ``min_tokens = M`` and seed ``EOS_SEED_BASE + K``, EOS comes at
position ``max(K, M)``.

**Stopping**, in vLLM's order (``v1/core/sched/utils.check_stop``) after each token: the token is
``_eos_token_id`` → STOP (stop_reason None); it is in ``stop_token_ids`` → STOP (stop_reason = the id);
``prompt_len + output_len >= max_model_len`` or ``output_len >= max_tokens`` → LENGTH. To hit a stop
token deterministically, pass ``stop_token_ids=[mock_token(prompt_ids, K, vocab)]``.

**``ignore_eos``** is a frontend-only field that the real engine never reads (vLLM's frontend leaves
``_eos_token_id`` unset instead). The mock honours it anyway — EOS neither ends nor is produced — so a
frontend that sends both is not a mismatch hidden by the mock; it is reported as a ``"warning"`` event.

**Logprobs.** For ``logprobs = k`` (``-1`` = the whole vocabulary), the row of a sampled token ``t`` is::

    token_ids = [t, t, alt(t, 2), ..., alt(t, k)]   (column 0 = sampled, then the top-k, rank 1 first)
    logprobs  = [-ln 2, -1 ln 2, -2 ln 2, ..., -k ln 2]   (rank r has logprob -r ln 2)
    rank      = 1

with ``alt(t, r) = FIRST + (t - FIRST + r - 1) % span``. Prompt logprobs (``prompt_logprobs = k``) use the
same row for every prompt token after the first (``len(prompt) - 1`` rows), sent with the first output.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any, NamedTuple

import msgspec

from .. import wire

#: The first id the token rule may produce; 0..3 are special tokens in Llama-style vocabularies.
FIRST_ORDINARY_ID = 4
#: Distance between consecutive output tokens of one request.
TOKEN_STRIDE = 7
#: ``seed = EOS_SEED_BASE + K`` makes a request emit EOS at output position ``K``.
EOS_SEED_BASE = 1_000_000
EOS_SEED_SPAN = 1_000_000

_LN2 = math.log(2.0)


def prompt_key(prompt_ids: list[int], vocab: int) -> int:
    """The per-prompt offset of :func:`mock_token` (computed once per request)."""
    return (31 * sum(prompt_ids) + len(prompt_ids)) % (vocab - FIRST_ORDINARY_ID)


def mock_token(prompt_ids: list[int], position: int, vocab: int) -> int:
    """The ordinary token the mock emits at output *position* (0-based) for *prompt_ids*."""
    span = vocab - FIRST_ORDINARY_ID
    return FIRST_ORDINARY_ID + (prompt_key(prompt_ids, vocab) + TOKEN_STRIDE * position) % span


def eos_position(seed: int | None) -> int | None:
    """The output position from which a request with *seed* wants EOS (``None``: never)."""
    if seed is not None and EOS_SEED_BASE <= seed < EOS_SEED_BASE + EOS_SEED_SPAN:
        return seed - EOS_SEED_BASE
    return None


def eos_seed(k: int) -> int:
    """The seed that makes a request emit EOS after *k* ordinary tokens."""
    if not 0 <= k < EOS_SEED_SPAN:
        raise ValueError(f"k must be in [0, {EOS_SEED_SPAN}), got {k}")
    return EOS_SEED_BASE + k


class Generation:
    """One request's output as a state machine: call :meth:`next_token` once per engine step.

    Requires a validated request (``max_tokens`` set, prompt shorter than *max_model_len*). With
    *scripted* ids (a matched rule of :mod:`.script`) those come first, then EOS, instead of the rules above.
    """

    __slots__ = (
        "client_index", "eos", "eos_from", "finish_reason", "key", "limit", "logprobs", "masked",
        "min_tokens", "position", "prompt_ids", "prompt_logprobs", "request_id", "scripted", "span",
        "stop_ids", "stop_reason", "vocab",
    )  # fmt: skip

    def __init__(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: wire.SamplingParams,
        *,
        vocab: int,
        max_model_len: int,
        client_index: int = 0,
        scripted: list[int] | None = None,
    ) -> None:
        if params.max_tokens is None:
            raise ValueError("max_tokens must be set")
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.client_index = client_index
        self.vocab = vocab
        self.span = vocab - FIRST_ORDINARY_ID
        self.key = prompt_key(prompt_ids, vocab)
        self.eos = None if params.ignore_eos else params.eos_token_id
        self.scripted = scripted
        # A script says where EOS comes (right after its ids); the seed rule is for unscripted requests.
        if self.eos is None:
            self.eos_from = None
        elif scripted is not None:
            self.eos_from = len(scripted)
        else:
            self.eos_from = eos_position(params.seed)
        self.stop_ids = frozenset(params.stop_token_ids or ())
        masked = set(self.stop_ids) | set(params.all_stop_token_ids)
        if self.eos is not None:
            masked.add(self.eos)
        self.masked = frozenset(masked)
        self.min_tokens = params.min_tokens
        self.limit = min(params.max_tokens, max_model_len - len(prompt_ids))
        self.logprobs = params.logprobs
        self.prompt_logprobs = params.prompt_logprobs
        self.position = 0
        self.finish_reason: wire.FinishReason | None = None
        self.stop_reason: int | None = None

    def next_token(self) -> int:
        """Produce the next token; afterwards :attr:`finish_reason` says whether the request ended."""
        i = self.position
        scripted = self.scripted
        if scripted is not None and i < len(scripted):
            token = scripted[i]
        elif self.eos_from is not None and i >= self.eos_from and i >= self.min_tokens:
            token = self.eos
        else:
            token = FIRST_ORDINARY_ID + (self.key + TOKEN_STRIDE * i) % self.span
        if i < self.min_tokens and token in self.masked:
            # The sampler's min_tokens mask: take the next id upward that is allowed.
            for _ in range(self.span):
                token = FIRST_ORDINARY_ID + (token - FIRST_ORDINARY_ID + 1) % self.span
                if token not in self.masked:
                    break
        self.position = i + 1
        if token == self.eos:
            self.finish_reason = wire.FinishReason.STOP
        elif token in self.stop_ids:
            self.finish_reason = wire.FinishReason.STOP
            self.stop_reason = token
        elif self.position >= self.limit:
            self.finish_reason = wire.FinishReason.LENGTH
        return token  # type: ignore[return-value]


class Expected(NamedTuple):
    token_ids: list[int]
    finish_reason: wire.FinishReason
    stop_reason: int | None


def expected_output(
    prompt_ids: list[int],
    params: wire.SamplingParams,
    *,
    vocab: int = 4096,
    max_model_len: int = 2048,
    scripted: list[int] | None = None,
) -> Expected:
    """What the mock engine will produce for this request (the same code path the engine runs)."""
    gen = Generation(
        "expected", prompt_ids, params, vocab=vocab, max_model_len=max_model_len, scripted=scripted
    )
    tokens = [gen.next_token()]
    while gen.finish_reason is None:
        tokens.append(gen.next_token())
    return Expected(tokens, gen.finish_reason, gen.stop_reason)


# ------------------------------------------------------------------------------------------------
# Fake logprobs


def num_logprob_columns(k: int, vocab: int) -> int:
    """Top-k width for ``logprobs = k`` (``-1`` means the whole vocabulary)."""
    return vocab if k < 0 else min(k, vocab)


def logprob_row(token: int, k: int, vocab: int) -> tuple[list[int], list[float]]:
    """The ``(token_ids, logprobs)`` row (``k + 1`` columns) the mock sends for sampled *token*."""
    span = vocab - FIRST_ORDINARY_ID
    ids = [token, token]
    ids.extend(FIRST_ORDINARY_ID + (token - FIRST_ORDINARY_ID + r - 1) % span for r in range(2, k + 1))
    return ids[: k + 1], [-_LN2] + [-r * _LN2 for r in range(1, k + 1)]


def _raw(dtype: str, shape: list[int], fmt: str, values: list[Any]) -> list[Any]:
    data = struct.pack(f"<{len(values)}{fmt}", *values)
    return [dtype, shape, msgspec.msgpack.Ext(wire.EXT_RAW_VIEW, data)]


def _rows(tokens: list[int], k: int, vocab: int) -> tuple[list[int], list[float], int]:
    width = num_logprob_columns(k, vocab)
    ids: list[int] = []
    lps: list[float] = []
    for token in tokens:
        row_ids, row_lps = logprob_row(token, width, vocab)
        ids.extend(row_ids)
        lps.extend(row_lps)
    return ids, lps, width + 1


def logprobs_lists(tokens: list[int], k: int, vocab: int) -> list[Any]:
    """``LogprobsLists`` for *tokens* as vLLM encodes it: ``[ids <i4, logprobs <f4, ranks <i8, None]``."""
    n = len(tokens)
    width = num_logprob_columns(k, vocab)
    cols = width + 1
    ids: list[int] = []
    for token in tokens:
        ids.extend(logprob_row(token, width, vocab)[0])
    ext = msgspec.msgpack.Ext
    return [
        ["<i4", [n, cols], ext(wire.EXT_RAW_VIEW, struct.pack(f"<{n * cols}i", *ids))],
        ["<f4", [n, cols], ext(wire.EXT_RAW_VIEW, _logprob_bytes(width) * n)],
        ["<i8", [n], ext(wire.EXT_RAW_VIEW, _RANK_ONE * n)],
        None,
    ]


_RANK_ONE = struct.pack("<q", 1)


@functools.lru_cache(maxsize=64)
def _logprob_bytes(width: int) -> bytes:
    """One row of logprobs; it depends only on the width (every sampled token has rank 1)."""
    values = [-_LN2] + [-r * _LN2 for r in range(1, width + 1)]
    return struct.pack(f"<{len(values)}f", *values)


def prompt_logprobs_tensors(prompt_ids: list[int], k: int, vocab: int) -> list[Any]:
    """``LogprobsTensors`` (torch dtype names) for the prompt tokens after the first."""
    tokens = prompt_ids[1:]
    ids, lps, cols = _rows(tokens, k, vocab)
    n = len(tokens)
    return [
        _raw("int32", [n, cols], "i", ids),
        _raw("float32", [n, cols], "f", lps),
        _raw("int64", [n], "q", [1] * n),
        None,
        None,
    ]
