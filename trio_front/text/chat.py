"""Chat requests -> prompt text, as vLLM 0.32's chat completions endpoint renders them.

`ChatRenderer` ties together the model's templates (`select_chat_template`), message normalization
(`normalize_messages`), the template variables vLLM passes and their precedence
(``ChatCompletionRequest.build_chat_params`` + ``OnlineRenderer.preprocess_chat``), and HF's
``apply_chat_template`` (``tokenize=False``; the special-token strings are template variables).

The prompt ids are then ``tokenizer.encode(prompt, add_special_tokens=request.add_special_tokens)``, whose
default for chat is ``False``: chat templates write BOS themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import attrs

from trio_front.text.chat_messages import Message, adapt_developer_role, normalize_messages, normalize_tools
from trio_front.text.chat_template import (
    ChatTemplateError,
    ContentFormat,
    compile_chat_template,
    select_chat_template,
)
from trio_front.text.tokenizer import Tokenizer

# Keys that HF's apply_chat_template consumes as its own parameters instead of passing them to the template.
_APPLY_PARAMS: Final = frozenset(
    {
        "tools",
        "documents",
        "chat_template",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
    }
)
_RESERVED: Final = frozenset({"messages", "conversation"})


def merge_kwargs(defaults: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """vLLM's ``merge_kwargs``: ``overrides`` win, except their ``None`` and ``"auto"`` values."""
    merged = dict(defaults or {})
    for key, value in (overrides or {}).items():
        if not (value is None or (isinstance(value, str) and value == "auto")):
            merged[key] = value
    return merged


@attrs.frozen
class RenderedChat:
    """``prompt``: the rendered text; ``conversation``: the normalized messages (vLLM's conversation:
    before the developer-role adaptation some templates get)."""

    prompt: str
    conversation: list[Message]


@attrs.frozen(eq=False)
class ChatRenderer:
    """Renders chat requests for one model. Immutable and shareable; compiled templates are cached.

    ``default_template``: the server's ``--chat-template`` (a template name or Jinja source), used when a
    request names none. ``default_kwargs``: the server's default ``chat_template_kwargs``.
    ``content_format``: ``"auto"`` (detect per template) or a forced ``"string"``/``"openai"``.
    """

    tokenizer: Tokenizer
    default_template: str | None = None
    default_kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    content_format: Literal["auto", "string", "openai"] = "auto"

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        reasoning_effort: str | None = None,
        chat_template: str | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> RenderedChat:
        """Render a chat request. Arguments are the request's fields (defaults are vLLM's request
        defaults); ``tools`` must already be ``None`` when the request's tools are to be hidden.

        Precedence of template variables, lowest first: the model's special tokens (``bos_token``...),
        the server's default kwargs, ``tools``, the request's ``chat_template_kwargs``, then the explicit
        fields (``add_generation_prompt``, ``continue_final_message``, ``documents``,
        ``reasoning_effort`` and ``enable_thinking = reasoning_effort != "none"`` unless given);
        ``None``/``"auto"`` values never override. Raises `ChatTemplateError`.
        """
        user_kwargs = dict(chat_template_kwargs or {})
        explicit: dict[str, Any] = {
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": continue_final_message,
            "documents": documents,
            "reasoning_effort": reasoning_effort,
        }
        if reasoning_effort is not None and "enable_thinking" not in user_kwargs:
            explicit["enable_thinking"] = reasoning_effort != "none"
        kwargs = merge_kwargs(
            merge_kwargs(self.default_kwargs, {"tools": None if tools is None else normalize_tools(tools)}),
            merge_kwargs(user_kwargs, explicit),
        )
        if kwargs.get("return_assistant_tokens_mask"):
            raise ChatTemplateError("`return_assistant_tokens_mask=True` requires `tokenize=True`")
        if reserved := _RESERVED & kwargs.keys():
            raise ChatTemplateError(f"Found unexpected chat template kwargs from request: {sorted(reserved)}")

        tools_kw = kwargs.get("tools")
        source = select_chat_template(
            self.tokenizer.files.chat_templates,
            chat_template if chat_template is not None else self.default_template,
            has_tools=tools_kw is not None,
        )
        template = compile_chat_template(source)
        content_format: ContentFormat = (
            template.content_format if self.content_format == "auto" else self.content_format
        )
        conversation = normalize_messages(messages, content_format)
        rendered_messages = conversation
        if not template.supports_developer_role:
            rendered_messages = adapt_developer_role(conversation)
        variables = {**self.tokenizer.special_tokens}
        variables.update((k, v) for k, v in kwargs.items() if k not in _APPLY_PARAMS)
        prompt = template.render(
            rendered_messages,
            add_generation_prompt=kwargs.get("add_generation_prompt", False),
            continue_final_message=kwargs.get("continue_final_message", False),
            tools=tools_kw,
            documents=kwargs.get("documents"),
            variables=variables,
        )
        return RenderedChat(prompt=prompt, conversation=conversation)
