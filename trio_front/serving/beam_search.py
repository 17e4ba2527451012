"""Beam search driven by the frontend over ordinary engine requests, as vLLM 0.32's
``BeamSearchOnlineMixin.beam_search`` does it (``vllm/entrypoints/generate/beam_search/online.py``).

The engine knows nothing of beams. Each step sends one request per live beam (prompt + the beam's
tokens, ``max_tokens=1``, ``logprobs=2*beam_width``, the request's temperature, cache salt, LoRA and
priority) and waits for all of them; every beam's candidates are its cumulative logprob plus each of the
``2*beam_width`` (or ``+1``, the sampled token) logprobs it got. An EOS candidate (unless ``ignore_eos``)
completes its beam (``finish_reason="stop"``, ``stop_reason=<eos id>``); the best ``beam_width`` other
candidates are the next step's beams. After ``max_tokens`` steps (or when no beam is left) the completed
and live beams are sorted by :func:`beam_score` and the best ``beam_width`` returned, text decoded with
EOS stripped. The prefix cache makes the repeated prompts cheap.

Two layers: :class:`BeamSearch` is the search's state and arithmetic, with no I/O (what to ask next,
what the answers do); :func:`run_beam_search` drives it over an :class:`EngineClient`.

Cancellation and exits: a step's requests are owned by the step. Leaving it for any reason (the caller
cancelled, e.g. the client disconnected; the engine failed; an error) aborts every one of them still
live in **one** ABORT (:meth:`EngineClient.abort_streams`), as does :meth:`BeamRun.abort`, which a caller
can run synchronously the moment it learns the work is unwanted (``api/disconnect.py::on_disconnect``).
Nothing outlives the call.

Where vLLM's order is unspecified (``np.argpartition``/quicksort among equal cumulative logprobs), ours
is stable: the earlier candidate (beam order, then the engine's logprob order) wins a tie.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from trio_front.engine import wire
from trio_front.engine.client import EngineClient, RequestStream
from trio_front.text.tokenizer import Tokenizer

from .generation import GenerationError
from .params import ModelLimits, ParamError, build_params, max_n_sequences

#: One step's answer for one beam: token id -> logprob, in the engine's order (sampled token first).
StepLogprobs = dict[int, float]


@attrs.frozen
class BeamParams:
    """vLLM's ``BeamSearchParams`` (the fields the search reads)."""

    beam_width: int
    max_tokens: int
    ignore_eos: bool = False
    temperature: float = 1.0
    length_penalty: float = 1.0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True


@attrs.define
class Beam:
    """One sequence: *tokens* are the prompt's plus the generated ones; ``logprobs[i]`` is the whole
    answer of the step that chose generated token *i* (what the response's top logprobs show)."""

    tokens: list[int]
    logprobs: list[StepLogprobs] = attrs.Factory(list)
    cum_logprob: float = 0.0
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@attrs.frozen
class BeamOutput:
    """One returned beam, in vLLM's ``CompletionOutput`` terms."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float
    logprobs: list[StepLogprobs]
    finish_reason: str
    stop_reason: int | str | None


@attrs.frozen
class BeamResult:
    prompt_ids: list[int]
    outputs: list[BeamOutput]

    @property
    def completion_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)


def beam_score(
    tokens: Sequence[int], cum_logprob: float, eos_token_id: int | None, length_penalty: float = 1.0
) -> float:
    """vLLM's ``get_beam_search_score``: *tokens* is the whole sequence (prompt included); a trailing
    EOS does not count toward the length."""
    seq_len = len(tokens)
    if tokens and tokens[-1] == eos_token_id:
        seq_len -= 1
    return cum_logprob / (max(seq_len, 1) ** length_penalty)


def check_beam_width(beam_width: int, max_logprobs: int, vocab_size: int) -> None:
    """vLLM's limits, with its messages: ``n`` (the beam width) in ``[1, $VLLM_MAX_N_SEQUENCES]``, and the
    ``2 * n`` logprobs each step asks for within ``--max-logprobs`` (``-1``: the vocabulary size)."""
    if beam_width < 1:
        raise ParamError(f"beam_width must be at least 1, got {beam_width}.", "n")
    limit = max_n_sequences()
    if beam_width > limit:
        raise ParamError(
            f"beam_width must be at most {limit}, got {beam_width}. To increase this limit, set "
            "the VLLM_MAX_N_SEQUENCES environment variable.",
            "n",
        )
    limit = vocab_size if max_logprobs == -1 else max_logprobs
    if 2 * beam_width > limit:
        raise ParamError(
            f"Requested sample logprobs of {2 * beam_width}, which is greater than max allowed: {limit}",
            "n",
        )


@attrs.frozen
class _StepFields:
    """The sampling fields of one step request: vLLM builds it as ``SamplingParams(logprobs=2*width,
    max_tokens=1, temperature=T)``, so everything but the temperature is at its default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    n: int = 1
    stop: Any = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logit_bias: dict[str, float] | None = None
    allowed_token_ids: list[int] | None = None


def step_params(params: BeamParams, *, limits: ModelLimits) -> wire.SamplingParams:
    """The engine params of every step request (validated by :func:`build_params`; the generation
    config's defaults other than the temperature do not apply, as in vLLM). Checks the width against
    ``limits.max_logprobs`` first. Raises :class:`ParamError`."""
    check_beam_width(params.beam_width, limits.max_logprobs, limits.vocab_size)
    defaults = {k: v for k, v in limits.defaults.items() if k == "temperature"}
    engine_params, _ = build_params(
        _StepFields(temperature=params.temperature),
        limits=attrs.evolve(limits, defaults=defaults),
        max_tokens=1,
        logprobs=2 * params.beam_width,
        n=1,
    )
    return engine_params


def step_logprobs(row_ids: Sequence[int], row_logprobs: Sequence[float]) -> StepLogprobs:
    """One logprobs row (sampled token, then the top-k) as vLLM's per-position dict: a token that is both
    sampled and in the top-k keeps its first place."""
    return dict(zip(row_ids, row_logprobs, strict=True))


class BeamSearch:
    """The search's state, no I/O: :meth:`step_prompts` says what to ask, :meth:`advance` takes the
    answers, :meth:`result` ends it. ``done`` once ``max_tokens`` steps ran, no beam is left, or a step
    was aborted."""

    def __init__(self, prompt_ids: list[int], params: BeamParams, eos_token_id: int | None) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.eos_token_id = eos_token_id
        self.live: list[Beam] = [Beam(tokens=list(prompt_ids))]
        self.completed: list[Beam] = []
        self.steps = 0
        self._aborted = False

    @property
    def done(self) -> bool:
        return self._aborted or not self.live or self.steps >= self.params.max_tokens

    def step_prompts(self) -> list[list[int]]:
        """The prompt of each live beam's next request (its whole token sequence)."""
        return [beam.tokens for beam in self.live]

    def abort(self) -> None:
        """A step request was aborted by the engine: the live beams end as they are (``"abort"``)."""
        for beam in self.live:
            beam.finish_reason = "abort"
        self._aborted = True

    def advance(self, answers: Sequence[Mapping[int, float] | None]) -> None:
        """Take one answer per live beam (in :meth:`step_prompts` order; ``None``: no logprobs came)."""
        if len(answers) != len(self.live):
            raise ValueError(f"{len(answers)} answers for {len(self.live)} beams")
        width, eos = self.params.beam_width, self.eos_token_id
        stop_on_eos = not self.params.ignore_eos
        candidates: list[tuple[float, int, Beam, StepLogprobs]] = []
        for beam, answer in zip(self.live, answers, strict=True):
            if answer is None:
                continue
            logprobs = dict(answer)
            for token_id, logprob in logprobs.items():
                cum = beam.cum_logprob + logprob
                if token_id == eos and stop_on_eos:
                    tokens = (
                        [*beam.tokens, token_id] if self.params.include_stop_str_in_output else beam.tokens
                    )
                    self.completed.append(
                        Beam(
                            tokens=list(tokens),
                            logprobs=[*beam.logprobs, logprobs],
                            cum_logprob=cum,
                            finish_reason="stop",
                            stop_reason=token_id,
                        )
                    )
                else:
                    candidates.append((cum, token_id, beam, logprobs))
        # Stable: among equal scores the earlier candidate wins (see the module docstring).
        best = sorted(candidates, key=lambda c: -c[0])[:width]
        self.live = [
            Beam(tokens=[*beam.tokens, token_id], logprobs=[*beam.logprobs, logprobs], cum_logprob=cum)
            for cum, token_id, beam, logprobs in best
        ]
        self.steps += 1

    def best(self) -> list[Beam]:
        """The best ``beam_width`` of the completed and live beams, best first."""
        p = self.params
        pool = [*self.completed, *self.live]
        ranked = sorted(
            pool,
            key=lambda b: beam_score(b.tokens, b.cum_logprob, self.eos_token_id, p.length_penalty),
            reverse=True,
        )
        return ranked[: p.beam_width]

    def result(self, tokenizer: Tokenizer) -> BeamResult:
        """The answer: the best beams with their text (EOS stripped, ``skip_special_tokens`` honoured)."""
        start, p, eos = len(self.prompt_ids), self.params, self.eos_token_id
        outputs = []
        for i, beam in enumerate(self.best()):
            if beam.tokens[-1] == eos and not p.ignore_eos:
                text_ids = beam.tokens[start:-1]
            else:
                text_ids = beam.tokens[start:]
            outputs.append(
                BeamOutput(
                    index=i,
                    text=tokenizer.decode(text_ids, skip_special_tokens=p.skip_special_tokens),
                    token_ids=beam.tokens[start:],
                    cumulative_logprob=beam.cum_logprob,
                    logprobs=beam.logprobs,
                    finish_reason=beam.finish_reason or "length",
                    stop_reason=beam.stop_reason,
                )
            )
        return BeamResult(self.prompt_ids, outputs)


class BeamRun:
    """One beam search over the engine; :meth:`run` does it, :meth:`abort` cuts it from outside."""

    def __init__(
        self,
        engine: EngineClient,
        tokenizer: Tokenizer,
        prompt_ids: list[int],
        params: BeamParams,
        engine_params: wire.SamplingParams,
        *,
        request_id: str,
        lora_request: wire.LoRARequest | None = None,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.search = BeamSearch(prompt_ids, params, tokenizer.eos_token_id)
        self.engine_params = engine_params
        self.request_id = request_id
        self.lora_request = lora_request
        self.priority = priority
        self.cache_salt = cache_salt
        #: the current step's engine requests (empty between steps)
        self.streams: list[RequestStream] = []
        #: every engine request id this run submitted, in order (for tests and logs)
        self.submitted: list[str] = []

    def abort(self, cause: str = "aborted") -> None:
        """Abort the current step's live requests in one ABORT (synchronous, idempotent)."""
        if self.streams:
            self.engine.abort_streams(self.streams, cause)

    async def run(self) -> BeamResult:
        """Search to the end. Raises :class:`GenerationError` if the engine failed a step request, and
        the engine client's errors (``EngineDeadError``...)."""
        search = self.search
        while not search.done:
            answers, aborted = await self._step(search.step_prompts())
            if aborted:
                search.abort()
                break
            search.advance(answers)
        return search.result(self.tokenizer)

    async def _step(self, prompts: list[list[int]]) -> tuple[list[StepLogprobs | None], bool]:
        # vLLM's ids: f"{request_id}-{uuid}-beam-{i}"; the client appends its unique suffix.
        batch = f"{self.request_id}-{uuid.uuid4().hex}"
        streams = self.streams = []
        try:
            for i, prompt in enumerate(prompts):
                stream = self.engine.generate(
                    prompt,
                    self.engine_params,
                    id_prefix=f"{batch}-beam-{i}",
                    lora_request=self.lora_request,
                    priority=self.priority,
                    cache_salt=self.cache_salt,
                )
                streams.append(stream)
                self.submitted.append(stream.request_id)
            answers: list[StepLogprobs | None] = []
            errored = aborted = False
            error: wire.RequestError | None = None
            for stream in streams:
                reason, answer, why = await _answer(stream)
                errored |= reason is wire.FinishReason.ERROR
                aborted |= reason is wire.FinishReason.ABORT
                error = error or why
                answers.append(answer)
            if errored:
                raise GenerationError("the engine failed a beam search step", error)
            return answers, aborted
        finally:
            # One ABORT for whatever is still live (none after a normal step): cancellation, errors.
            self.engine.abort_streams(streams, "beam search step left early")
            self.streams = []


async def _answer(
    stream: RequestStream,
) -> tuple[wire.FinishReason | None, StepLogprobs | None, wire.RequestError | None]:
    """Wait for a step request's end; its finish reason, first logprobs row and (vLLM 0.33) the engine's
    reason for an error."""
    row: StepLogprobs | None = None
    reason = error = None
    async for delta in stream:
        if row is None and delta.logprobs is not None and delta.logprobs.token_ids:
            row = step_logprobs(delta.logprobs.token_ids[0], delta.logprobs.logprobs[0])
        reason, error = delta.finish_reason, delta.error
    return reason, row, error


async def run_beam_search(
    engine: EngineClient,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    params: BeamParams,
    *,
    limits: ModelLimits,
    request_id: str,
    lora_request: wire.LoRARequest | None = None,
    priority: int = 0,
    cache_salt: str | None = None,
) -> BeamResult:
    """Validate, then search (see :class:`BeamRun`; use that directly to abort from a callback)."""
    run = BeamRun(
        engine,
        tokenizer,
        prompt_ids,
        params,
        step_params(params, limits=limits),
        request_id=request_id,
        lora_request=lora_request,
        priority=priority,
        cache_salt=cache_salt,
    )
    return await run.run()
