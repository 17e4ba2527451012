"""``use_beam_search`` on ``/v1/completions`` and ``/v1/chat/completions``: validation and vLLM 0.32's
response shapes around :mod:`trio_front.serving.beam_search`.

The endpoint modules tokenize, then hand over to :func:`complete` / :func:`chat`. What vLLM's beam search
honours: ``n`` (the beam width), ``max_tokens``, ``temperature``, ``ignore_eos``, ``length_penalty``,
``include_stop_str_in_output``, ``skip_special_tokens``, ``echo``, ``logprobs`` / ``top_logprobs``
(each step's alternatives). vLLM silently ignores every other sampling field with beam search; here
they are refused with a 400 naming the field (:func:`check_request`), as is anything constraining the
output (``response_format``, ``structured_outputs``, ``tool_choice`` required or named), which vLLM drops.
vLLM's own refusals: completions with ``stream``, ``echo`` with ``logprobs``, ``logprob_token_ids``,
``2 * n`` above ``--max-logprobs``.

The answer comes only when the search ends (vLLM's beam generator yields once): a streamed chat request
gets one role chunk per choice, then one chunk per choice with its whole text and finish reason. Every
prompt's search runs in the request's scope; a client disconnect aborts the current step's engine
requests of every search in one ABORT, at once (:func:`~.disconnect.on_disconnect`).

Deliberate difference from vLLM, for chat ``logprobs``: each token's ``bytes`` are given (vLLM's beam
steps skip detokenization, which leaves them ``null``); the request's ``priority`` reaches the step
requests (vLLM drops it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from trio_front.assistant.setup import AssistantSetup
from trio_front.engine import wire
from trio_front.engine.client import EngineError
from trio_front.serving import structured
from trio_front.serving.beam_search import (
    BeamOutput,
    BeamParams,
    BeamResult,
    BeamRun,
    step_params,
)
from trio_front.serving.generation import GenerationError, Usage
from trio_front.serving.params import ParamError, check_prompt
from trio_front.text.tokenizer import Tokenizer

from .disconnect import on_disconnect, unwrap
from .errors import APIError
from .http import Send, SSEWriter, chunk_encoder, send_json
from .models import ChatCompletionRequest, CompletionRequest, VLLMFields
from .state import (
    ServerState,
    engine_failure,
    param_error,
    response_usage,
    stream_fingerprint,
    token_text,
)

#: Fields vLLM's beam search does not read, with the values that mean "unset" (anything else is a 400).
_NOT_HONOURED: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("top_p", (None, 1.0)),
    ("top_k", (None, 0, -1)),
    ("min_p", (None, 0.0)),
    ("presence_penalty", (None, 0.0)),
    ("frequency_penalty", (None, 0.0)),
    ("repetition_penalty", (None, 1.0)),
    ("seed", (None,)),
    ("stop", (None, [], "")),
    ("stop_token_ids", (None, [])),
    ("min_tokens", (0,)),
    ("logit_bias", (None, {})),
    ("allowed_token_ids", (None,)),
    ("spaces_between_special_tokens", (True,)),
    ("prompt_logprobs", (None,)),
    ("bad_words", (None, [])),
    ("vllm_xargs", (None, {})),
    ("kv_transfer_params", (None,)),
    ("ec_transfer_params", (None,)),
    ("watermarking", (None, False)),
    ("repetition_detection", (None,)),
    ("thinking_token_budget", (None,)),
    ("stream_interval", (None,)),
)


def _refuse(param: str, what: str | None = None) -> APIError:
    return APIError(400, f"{what or param} is not supported with beam search", param=param)


def check_request(req: VLLMFields) -> None:
    """The refusals common to both endpoints (vLLM's first, then the fields beam search ignores)."""
    if req.logprob_token_ids:
        raise APIError(
            400, "`logprob_token_ids` is not supported with beam search.", param="logprob_token_ids"
        )
    for name, unset in _NOT_HONOURED:
        if getattr(req, name, None) not in unset:
            raise _refuse(name)
    if not math.isfinite(req.length_penalty):
        raise APIError(400, "length_penalty must be a finite number", param="length_penalty")


def _beam_params(
    state: ServerState, req: VLLMFields, max_tokens: int, skip_special_tokens: bool
) -> tuple[BeamParams, wire.SamplingParams]:
    # vLLM's temperature: the request's, else the generation config's, else 1.0.
    temperature = req.temperature
    if temperature is None:
        temperature = float(state.limits.defaults.get("temperature", 1.0))
    params = BeamParams(
        beam_width=req.n,
        max_tokens=max_tokens,
        ignore_eos=req.ignore_eos,
        temperature=temperature,
        length_penalty=req.length_penalty,
        include_stop_str_in_output=req.include_stop_str_in_output,
        skip_special_tokens=skip_special_tokens,
    )
    try:
        return params, step_params(params, limits=state.limits)
    except ParamError as exc:
        raise param_error(exc) from None


async def _search_all(
    state: ServerState,
    runs: Sequence[BeamRun],
) -> list[BeamResult]:
    """Run every search in the request's scope; a client disconnect aborts all their current steps."""

    def abort_all() -> None:
        streams = [s for run in runs for s in run.streams]
        if streams:
            state.engine.abort_streams(streams, "client disconnected")

    on_disconnect(abort_all)
    if len(runs) == 1:
        return [await runs[0].run()]
    results: list[BeamResult | None] = [None] * len(runs)

    async def one(i: int) -> None:
        results[i] = await runs[i].run()

    try:
        async with trio.open_nursery() as nursery:
            for i in range(len(runs)):
                nursery.start_soon(one, i)
    except BaseExceptionGroup as group:  # one search failed (the others were cancelled): its error
        raise unwrap(group) from None
    return [r for r in results if r is not None]


def _run(
    state: ServerState,
    prompt_ids: list[int],
    params: BeamParams,
    engine_params: wire.SamplingParams,
    *,
    request_id: str,
    req: VLLMFields,
    lora_request: wire.LoRARequest | None,
) -> BeamRun:
    return BeamRun(
        state.engine,
        state.tokenizer,
        prompt_ids,
        params,
        engine_params,
        request_id=request_id,
        lora_request=lora_request,
        priority=req.priority,
        cache_salt=req.cache_salt,
    )


def _token_string(tokenizer: Tokenizer, token_id: int, as_id: bool) -> str:
    return f"token_id:{token_id}" if as_id else token_text(tokenizer, token_id)


def completion_logprobs(
    tokenizer: Tokenizer, output: BeamOutput, top: int, *, as_token_ids: bool = False
) -> dict[str, Any]:
    """vLLM's ``_create_completion_logprobs`` over a beam: each token's own logprob, and the first
    ``top + 1`` entries of the answer of the step that chose it (``-1``: all)."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []
    offset = 0
    for token_id, step in zip(output.token_ids, output.logprobs, strict=False):
        text = _token_string(tokenizer, token_id, as_token_ids)
        text_offset.append(offset)
        offset += len(text)
        tokens.append(text)
        token_logprobs.append(max(step[token_id], -9999.0))
        top_logprobs.append(
            {
                _token_string(tokenizer, tid, as_token_ids): max(value, -9999.0)
                for i, (tid, value) in enumerate(step.items())
                if top == -1 or top >= i
            }
        )
    return {
        "text_offset": text_offset,
        "token_logprobs": token_logprobs,
        "tokens": tokens,
        "top_logprobs": top_logprobs,
    }


def chat_logprobs(
    tokenizer: Tokenizer, output: BeamOutput, top: int | None, *, as_token_ids: bool = False
) -> dict[str, Any]:
    """vLLM's ``_create_chat_logprobs`` over a beam: the first *top* entries of each choosing step's
    answer (``-1``: all; ``None``: none)."""
    content = []
    for token_id, step in zip(output.token_ids, output.logprobs, strict=False):
        text = _token_string(tokenizer, token_id, as_token_ids)
        alternatives = []
        for i, (tid, value) in enumerate(step.items()):
            if top is None or (top != -1 and i >= top):
                break
            alt = _token_string(tokenizer, tid, as_token_ids)
            alternatives.append({"token": alt, "logprob": max(value, -9999.0), "bytes": list(alt.encode())})
        content.append(
            {
                "token": text,
                "logprob": max(step[token_id], -9999.0),
                "bytes": list(text.encode()),
                "top_logprobs": alternatives,
            }
        )
    return {"content": content}


def _usage(results: Sequence[BeamResult]) -> Usage:
    usage = Usage(prompt_tokens=sum(len(r.prompt_ids) for r in results))
    usage.completion_tokens = sum(r.completion_tokens for r in results)
    return usage


# ------------------------------------------------------------------------------------------ completions


async def complete(
    state: ServerState,
    req: CompletionRequest,
    prompts: Sequence[tuple[list[int], str | None]],
    *,
    request_id: str,
    model: str,
    lora_request: wire.LoRARequest | None,
    send: Send,
) -> None:
    """Answer a ``/v1/completions`` beam search for *prompts* (each: token ids, prompt text or ``None``
    for a token prompt; the text is what ``echo`` shows). Validates everything before the engine sees
    anything; raises :class:`APIError`."""
    if req.stream:
        raise APIError(400, "Streaming is not currently supported with beam search")
    if req.echo and req.logprobs is not None:
        raise APIError(
            400,
            "`echo` with `logprobs` is not supported with beam search because beam search does not "
            "compute prompt logprobs.",
            param="echo",
        )
    if req.logprobs is not None and req.logprobs < -1:
        raise APIError(400, "`logprobs` must be a positive value or -1.", param="logprobs")
    check_request(req)
    _check_constraint(state, req)
    state.check_engine()
    runs, texts = [], []
    for ids, text in prompts:
        try:
            max_tokens = check_prompt(len(ids), state.limits, req.max_tokens)
        except ParamError as exc:
            raise param_error(exc) from None
        params, engine_params = _beam_params(state, req, max_tokens, req.skip_special_tokens)
        runs.append(
            _run(state, ids, params, engine_params, request_id=request_id, req=req, lora_request=lora_request)
        )
        if req.echo and not text:
            text = state.tokenizer.decode(ids, skip_special_tokens=False)
        # vLLM: with return_token_ids the echoed prompt is in prompt_token_ids, not in the text
        texts.append("" if req.return_token_ids else text or "")
    created = _now()
    try:
        results = await _search_all(state, runs)
    except GenerationError as exc:
        raise engine_failure(None, error=exc.error) from None
    tok = state.tokenizer
    choices = []
    for result, prompt_text in zip(results, texts, strict=True):
        for output in result.outputs:
            choice: dict[str, Any] = {
                "index": len(choices),
                "text": prompt_text + output.text if req.echo else output.text,
                "logprobs": None
                if req.logprobs is None
                else completion_logprobs(
                    tok,
                    output,
                    req.logprobs,
                    as_token_ids=state.tokens_as_ids(req.return_tokens_as_token_ids),
                ),
                "finish_reason": output.finish_reason,
                "stop_reason": output.stop_reason,
                "prompt_logprobs": None,
                # vLLM's keys, null unless asked for
                "prompt_token_ids": result.prompt_ids if req.return_token_ids else None,
                "token_ids": output.token_ids if req.return_token_ids else None,
                "routed_experts": None,
            }
            choices.append(choice)
    await send_json(
        send,
        200,
        {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "service_tier": None,
            "usage": response_usage(_usage(results).as_dict()),
            "system_fingerprint": state.system_fingerprint,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        },
    )


def _check_constraint(state: ServerState, req: VLLMFields) -> None:
    """A structured-output constraint is not applied by beam search (vLLM drops it): refused."""
    try:
        constraint = structured.from_request(
            getattr(req, "response_format", None),
            getattr(req, "structured_outputs", None),
            config=state.structured,
        )
    except ParamError as exc:
        raise param_error(exc) from None
    if constraint is not None:
        raise _refuse(_constraint_param(req))


def _constraint_param(req: VLLMFields) -> str:
    return "structured_outputs" if getattr(req, "structured_outputs", None) is not None else "response_format"


def _now() -> int:
    return int(time.time())


# ------------------------------------------------------------------------------------------ chat


async def chat(
    state: ServerState,
    req: ChatCompletionRequest,
    prompt_ids: list[int],
    setup: AssistantSetup,
    *,
    request_id: str,
    model: str,
    lora_request: wire.LoRARequest | None,
    send: Send,
) -> None:
    """Answer a ``/v1/chat/completions`` beam search for the rendered, tokenized *prompt_ids*; *setup*
    is the request's assistant setup (reasoning and auto tool parsing run over each beam's text).
    Validates everything before the engine sees anything; raises :class:`APIError`."""
    from . import chat as chat_api  # chat.py dispatches here: import at call time, not at load

    check_request(req)
    if setup.plan.schema is not None:
        raise _refuse("tool_choice", f"tool_choice {setup.plan.mode!r}")
    if setup.constraint is not None:
        raise _refuse(_constraint_param(req))
    usage_wanted, continuous = state.stream_usage(req.stream_options)
    state.check_engine()
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    try:
        max_tokens = check_prompt(len(prompt_ids), state.limits, max_tokens)
    except ParamError as exc:
        raise param_error(exc) from None
    skip_special = False if setup.needs_special_tokens else req.skip_special_tokens
    params, engine_params = _beam_params(state, req, max_tokens, skip_special)
    run = _run(
        state, prompt_ids, params, engine_params, request_id=request_id, req=req, lora_request=lora_request
    )
    created = _now()
    head: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    sse: SSEWriter | None = None
    if req.stream:
        sse = SSEWriter(send, send_timeout=state.send_timeout)
        await sse.start()
    try:
        (result,) = await _with_keep_alive(state, sse, lambda: _search_all(state, [run]))
    except GenerationError as exc:
        if sse is None:
            raise engine_failure(None, error=exc.error) from None
        await sse.event(engine_failure(None, error=exc.error).body())
        await sse.done()
        return
    except EngineError as exc:
        if sse is None:
            raise
        await sse.event(APIError(503, str(exc)).body())
        await sse.done()
        return

    tok = state.tokenizer
    role = state.chat_role(req.add_generation_prompt, req.messages)  # vLLM's get_chat_request_role
    prefix = chat_api._echo_prefix(req, role)
    hide_logprobs = not req.include_reasoning and setup.reasoning is not None  # as vLLM
    usage = _usage([result])
    reasoning_tokens: list[int] = []
    parsed = []
    for output in result.outputs:
        choice_setup = setup.fork(tok)  # a fresh (stateful) reasoning parser per choice
        choice_setup.start(prompt_ids)
        out = choice_setup.output()
        events = out.push(output.text, output.token_ids) + out.finish()
        if (count := out.reasoning_tokens()) is not None:
            reasoning_tokens.append(count)
        logprobs = None
        if req.logprobs and not hide_logprobs:
            logprobs = chat_logprobs(
                tok,
                output,
                req.top_logprobs,
                as_token_ids=state.tokens_as_ids(req.return_tokens_as_token_ids),
            )
        parsed.append((output, choice_setup, out, events, logprobs))
    if reasoning_tokens:
        usage.reasoning_tokens = sum(reasoning_tokens)

    if sse is None:
        choices = []
        for output, choice_setup, out, _events, logprobs in parsed:
            res = out.result
            choice: dict[str, Any] = {
                "index": output.index,
                "message": {
                    "role": role,
                    "content": chat_api._message_content(choice_setup, out, prefix),
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "reasoning": res.reasoning,
                },
                "logprobs": logprobs,
                "finish_reason": choice_setup.plan.finish_reason(output.finish_reason, out.called),
                "stop_reason": output.stop_reason,
            }
            if res.tool_calls:  # vLLM's ChatMessage serializer drops an empty tool_calls list
                choice["message"]["tool_calls"] = [chat_api._tool_call(c) for c in res.tool_calls]
            choice["token_ids"] = output.token_ids if req.return_token_ids else None
            choice["routed_experts"] = None
            choices.append(choice)
        body: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": state.system_fingerprint,
            "usage": response_usage(usage.as_dict()),
            "prompt_logprobs": None,
            "prompt_token_ids": prompt_ids if req.return_token_ids else None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
        await send_json(send, 200, body)
        return

    # Streamed: what vLLM's stream generator makes of the one final output.
    encode = chunk_encoder(head)
    fingerprint = stream_fingerprint(state)  # on the finished choices, or the usage chunk after them
    for output, *_ in parsed:
        role_choice = {
            "index": output.index,
            "delta": {"role": role, "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        event: dict[str, Any] = {**head, "choices": [role_choice]}
        if req.return_token_ids:  # on every choice's role chunk, as vLLM (and chat.py) send it
            event["prompt_token_ids"] = prompt_ids
        if continuous:
            event["usage"] = chat_api.running_usage(state, len(prompt_ids), 0, 0)
        await sse.event(event)
    if prefix:
        for output, *_ in parsed:
            echo = {
                "index": output.index,
                "delta": {"content": prefix},
                "logprobs": None,
                "finish_reason": None,
            }
            if continuous:
                await sse.event(
                    {**head, "choices": [echo], "usage": chat_api.running_usage(state, len(prompt_ids), 0, 0)}
                )
            else:
                await sse.event(encode(echo))
    for n, (output, choice_setup, out, events, logprobs) in enumerate(parsed):
        choice = {
            "index": output.index,
            "delta": chat_api._delta(events),
            "logprobs": logprobs,
            "finish_reason": choice_setup.plan.finish_reason(output.finish_reason, out.called),
            "stop_reason": output.stop_reason,
        }
        if req.return_token_ids:
            choice["token_ids"] = output.token_ids
        last = n == len(parsed) - 1
        stamp = {} if usage_wanted else fingerprint  # every beam choice is sent once, finished
        if continuous:
            running = chat_api.running_usage(
                state, len(prompt_ids), len(output.token_ids), out.reasoning_tokens() or 0
            )
            await sse.event({**head, "choices": [choice], "usage": running, **stamp}, hold=last)
        elif stamp:
            await sse.event({**head, "choices": [choice], **stamp}, hold=last)
        else:
            await sse.event(encode(choice), hold=last)
    if usage_wanted:
        await sse.event({**head, "choices": [], "usage": usage.as_dict(), **fingerprint}, hold=True)
    await sse.done()


T = TypeVar("T")


async def _with_keep_alive(state: ServerState, sse: SSEWriter | None, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``; meanwhile a streamed response gets SSE comments every ``keep_alive_interval``
    (a long search says nothing until it ends)."""
    interval = state.keep_alive_interval
    if sse is None or not interval:
        return await work()

    async def keep_alive() -> None:
        while True:
            await trio.sleep(interval)
            await sse.keep_alive()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive)
            result = await work()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the search's error (or the client's disconnect), unwrapped
        raise unwrap(group) from None
    return result
