"""``thinking: {"type": "disabled"}`` → the chat template's ``reasoning_effort``
(vLLM's ``--anthropic-disabled-thinking-effort``, default ``auto``).

``auto`` is vLLM's probe of the chat template, done once (lazily, then cached on the state): render a
one-message conversation with ``reasoning_effort="none"``; if the template refuses it, or renders it as
it renders one of the real efforts (it ignores ``none``), disabled thinking becomes ``low``; otherwise
``none`` (which also sets ``enable_thinking=false`` for templates that read that).
"""

from __future__ import annotations

from trio_front.text.chat_template import ChatTemplateError

from ..state import ServerState
from .request import EFFORTS

#: the flag's values (vLLM's ``AnthropicDisabledThinkingEffortOption``)
CHOICES = ("auto", "none", *EFFORTS)


def _render(state: ServerState, effort: str) -> str | None:
    try:
        rendered = state.renderer.render(
            [{"role": "user", "content": "Hi"}], add_generation_prompt=True, reasoning_effort=effort
        )
    except ChatTemplateError:
        return None
    return rendered.prompt


def probe(state: ServerState) -> str:
    """vLLM's ``_probe_disabled_thinking_effort`` (text, not token ids: the same text tokenizes alike)."""
    none = _render(state, "none")
    if none is None:
        return "low"
    return "low" if any(_render(state, effort) == none for effort in EFFORTS) else "none"


def disabled_thinking_effort(state: ServerState) -> str:
    """The configured value, or the probe's (computed on first use, then kept)."""
    if state.anthropic_disabled_thinking_effort == "auto":
        state.anthropic_disabled_thinking_effort = probe(state)
    return state.anthropic_disabled_thinking_effort
