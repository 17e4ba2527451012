"""The two steps every generating API takes with an :class:`~trio_front.assistant.setup.AssistantSetup`
(chat, Responses, Realtime): sampling parameters that carry its constraint and special-token need, and
a :class:`Generation` that tells the engine where reasoning stands. One place, so no API forgets one."""

from __future__ import annotations

from trio_front.assistant.setup import AssistantSetup
from trio_front.engine import wire
from trio_front.serving.generation import Generation
from trio_front.serving.params import ModelLimits, ParamError, SamplingLike, build_params
from trio_front.text.detokenizer import TextParams
from trio_front.text.tokenizer import Tokenizer

from .state import ServerState


def assistant_params(
    setup: AssistantSetup,
    fields: SamplingLike,
    *,
    limits: ModelLimits,
    max_tokens: int,
    stream: bool,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    tokenizer: Tokenizer | None = None,
    logprobs_param: str = "logprobs",
    chat: bool = False,
) -> tuple[wire.SamplingParams, TextParams]:
    """:func:`build_params` with the setup's structured-output constraint and, when a format's markers
    are special tokens, ``skip_special_tokens=False``. Raises :class:`ParamError`.

    ``n`` and ``echo`` are chat completions' (*chat*); Responses and Realtime take the shared sampling
    fields too, but one answer and no echo, so they refuse them rather than ignore them."""
    if not chat:
        if fields.n != 1:
            raise ParamError("n is not supported by this API (one answer per response)", "n")
        if getattr(fields, "echo", False):
            raise ParamError("echo is not supported by this API", "echo")
    return build_params(
        fields,
        limits=limits,
        max_tokens=max_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        tokenizer=tokenizer,
        logprobs_param=logprobs_param,
        stream=stream,
        structured_outputs=setup.constraint,
        skip_special_tokens=False if setup.needs_special_tokens else None,
    )


def assistant_generation(
    state: ServerState,
    setup: AssistantSetup,
    prompt_ids: list[int],
    params: wire.SamplingParams,
    text_params: TextParams,
    *,
    id_prefix: str,
    request_id: str | None = None,
    external_id: str | None = None,
    lora_request: wire.LoRARequest | None = None,
    priority: int = 0,
    cache_salt: str | None = None,
) -> Generation:
    """The (unstarted) generation, with ``reasoning_ended`` / ``reasoning_parser_kwargs`` from the
    setup's look at the rendered prompt."""
    reasoning_ended, reasoning_kwargs = setup.start(prompt_ids)
    return Generation(
        state.engine,
        state.tokenizer,
        prompt_ids,
        params,
        text_params,
        id_prefix=id_prefix,
        request_id=request_id,
        external_id=external_id,
        lora_request=lora_request,
        priority=priority,
        cache_salt=cache_salt,
        reasoning_ended=reasoning_ended,
        reasoning_parser_kwargs=reasoning_kwargs,
    )
