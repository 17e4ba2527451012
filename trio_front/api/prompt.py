"""Conversation → prompt token ids for the Realtime and Responses APIs, with optional truncation.

Both APIs hold a conversation (a list of ``{"role", "content"}`` messages) plus instructions, render it
through the model's chat template and generate the assistant's next message. With ``truncate=True``
(Realtime ``truncation: "auto"``, Responses ``truncation: "auto"``) the oldest messages are left out
until the prompt leaves room for ``max_tokens`` output tokens; when the output is unbounded
(``max_tokens=None``) it must leave room for :data:`UNBOUNDED_RESERVE` tokens or a quarter of the
context, whichever is less (as OpenAI reserves the model's maximum output before truncating). The
instructions and the newest message are always kept. The smallest number of dropped messages is found
by bisection, so a long conversation costs O(log n) renders, not O(n).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from trio_front.serving.params import ParamError, check_prompt
from trio_front.text.chat_template import ChatTemplateError

from .errors import APIError
from .state import ServerState, param_error

#: Output tokens kept free by truncation when the request sets no output limit.
UNBOUNDED_RESERVE = 4096


@attrs.frozen
class Prompt:
    ids: list[int]
    #: the effective max_tokens (what fits when the request left it open)
    max_tokens: int
    #: how many of the oldest conversation messages were left out
    dropped: int = 0


async def build_prompt(
    state: ServerState,
    instructions: str | None,
    messages: Sequence[dict[str, Any]],
    *,
    max_tokens: int | None,
    truncate: bool = False,
    tools: list[dict[str, Any]] | None = None,
    reasoning_effort: str | None = None,
) -> Prompt:
    """Render and tokenize; raise a 400 :class:`APIError` (``param`` ``input_tokens`` when too long).

    *tools* (chat form, ``{"type": "function", "function": {...}}``) go to the chat template, as the
    assistant layer's plan says (``ToolPlan.render_tools``); messages may carry assistant ``tool_calls``,
    ``tool`` results and ``reasoning``.

    Cancellation: tokenizing a long prompt runs in a worker thread; cancelling abandons it at once."""
    limits = state.limits

    async def encode(skip: int) -> list[int]:
        conversation = list(messages[skip:])
        if instructions:
            conversation.insert(0, {"role": "system", "content": instructions})
        try:
            rendered = state.renderer.render(
                conversation, add_generation_prompt=True, tools=tools, reasoning_effort=reasoning_effort
            )
        except ChatTemplateError as exc:
            raise APIError(400, str(exc), param="input") from None
        return await state.tokenizer.encode_async(rendered.prompt, add_special_tokens=False)

    reserve = max_tokens or min(UNBOUNDED_RESERVE, limits.max_model_len // 4) or 1

    def fits(ids: list[int]) -> bool:
        return 0 < len(ids) and len(ids) + reserve <= limits.max_model_len

    ids, dropped = await encode(0), 0
    if truncate and not fits(ids) and len(messages) > 1:
        low, high = 1, len(messages) - 1  # the newest message is never dropped
        best: tuple[int, list[int]] | None = None
        while low <= high:
            middle = (low + high) // 2
            candidate = await encode(middle)
            if fits(candidate):
                best, high = (middle, candidate), middle - 1
            else:
                low = middle + 1
        if best is not None:
            dropped, ids = best
        else:
            ids = await encode(len(messages) - 1)
    try:
        return Prompt(ids, check_prompt(len(ids), limits, max_tokens), dropped)
    except ParamError as exc:
        raise param_error(exc) from None
