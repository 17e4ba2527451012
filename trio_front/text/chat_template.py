"""Hugging Face chat templates, rendered as ``transformers`` 5.x renders them for vLLM 0.32.

The Jinja environment is transformers' (``utils/chat_template_utils.py``): an
``ImmutableSandboxedEnvironment`` with ``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension,
a ``{% generation %}`` tag that renders its body, a ``tojson`` filter that does not HTML-escape,
``raise_exception`` and ``strftime_now``. The sandbox blocks access to unsafe attributes (``__class__``
...) and mutation of the passed-in objects (``messages.append``...).

A `ChatTemplate` is compiled once (`compile_chat_template` caches by source) and is immutable; render it
from any task. Rendering is synchronous, pure Python and holds the GIL; templates are small, so it runs
inline. Every failure -- a template calling ``raise_exception``, an undefined variable used wrongly, a
sandbox violation, bad arguments -- raises `ChatTemplateError`, which the API maps to a 400.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import attrs
import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

from trio_front.text.template_ast import detect_content_format

ContentFormat = Literal["string", "openai"]

# HF marks the end of the message to continue with this tag, renders, then cuts the text there.
_CONTINUE_TAG: Final = "CONTINUE_FINAL_MESSAGE_TAG "


class ChatTemplateError(ValueError):
    """The chat template cannot be resolved or rendered for this request (a client error)."""


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (HF's assistant-mask tracker): renders the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: object,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson HTML-escapes (<, >, &, '); templates expect plain json.dumps, as in HF.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _make_environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV: Final = _make_environment()


@attrs.frozen(eq=False)
class ChatTemplate:
    """A compiled template. ``content_format`` is how message content must be shaped for it (vLLM's
    auto-detection: ``"openai"`` when the template loops over a message's content, else ``"string"``);
    ``supports_developer_role`` is vLLM's test for templates that know the ``developer`` role."""

    source: str = attrs.field(repr=False)
    template: jinja2.Template = attrs.field(repr=False)
    content_format: ContentFormat
    supports_developer_role: bool

    def render(
        self,
        conversation: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """Render ``conversation`` (already-normalized messages, see `chat_messages`).

        ``variables`` are the remaining template variables (special tokens such as ``bos_token``, then
        ``chat_template_kwargs``). ``continue_final_message`` (HF semantics) renders so that generation
        continues the final message's ``content`` (or the named field): the text is cut right after that
        content, dropping whatever the template appends (end-of-turn tokens...). It cannot be combined
        with ``add_generation_prompt``. Raises `ChatTemplateError`.
        """
        if not conversation:
            raise ChatTemplateError(
                "Cannot apply chat template to an empty conversation. Provide at least one message."
            )
        if continue_final_message and add_generation_prompt:
            raise ChatTemplateError(
                "continue_final_message and add_generation_prompt are not compatible. Use "
                "continue_final_message when you want the model to continue the final message, and "
                "add_generation_prompt when you want to add a header that will prompt it to start a new "
                "assistant message instead."
            )
        if tools is not None and not all(isinstance(tool, Mapping) for tool in tools):
            raise ChatTemplateError("Tools should be JSON schemas (objects).")
        if documents is not None and not all(isinstance(doc, Mapping) for doc in documents):
            raise ChatTemplateError("Documents should be a list of dicts with 'title' and 'text' keys!")
        if variables and "messages" in variables:
            raise ChatTemplateError("'messages' cannot be passed as a chat template variable")
        messages = list(conversation)
        final_text = ""
        field = ""
        if continue_final_message:
            field = continue_final_message if isinstance(continue_final_message, str) else "content"
            messages, final_text = self._mark_final_message(messages, field)
        try:
            rendered = self.template.render(
                **(variables or {}),
                messages=messages,
                tools=None if tools is None else list(tools),
                documents=documents,
                add_generation_prompt=add_generation_prompt,
            )
        except ChatTemplateError:
            raise
        except Exception as exc:  # template code can raise anything; all of it is the request's fault
            raise ChatTemplateError(_error_reason(exc)) from exc
        if continue_final_message:
            rendered = _cut_at_tag(rendered, final_text)
        return rendered

    def _mark_final_message(self, messages: list[Any], field: str) -> tuple[list[Any], str]:
        last = messages[-1]
        final = last.get(field) if isinstance(last, Mapping) else None
        if final is None:
            raise ChatTemplateError(
                f'continue_final_message is set but the final message has no "{field}" to continue!'
            )
        if field not in self.source:
            raise ChatTemplateError(
                f'continue_final_message is set to "{field}" but this is not an accepted field in the '
                "chat_template"
            )
        last = copy.deepcopy(last)  # never modify the caller's messages
        if isinstance(last[field], (list, tuple)):
            for block in reversed(last[field]):
                if isinstance(block, dict) and "text" in block:
                    final = block["text"]
                    block["text"] = block["text"] + _CONTINUE_TAG
                    break
            else:
                raise ChatTemplateError(
                    "continue_final_message is set but we could not find any text to continue in the "
                    "final message!"
                )
        else:
            last[field] = last[field] + _CONTINUE_TAG
        return [*messages[:-1], last], str(final)


def _cut_at_tag(rendered: str, final_text: str) -> str:
    tag = _CONTINUE_TAG.strip()
    if final_text.strip() not in rendered or tag not in rendered:
        raise ChatTemplateError(
            "continue_final_message is set but the final message does not appear in the chat after "
            "applying the chat template! This can happen if the chat template deletes portions of the "
            "final message."
        )
    at = rendered.rindex(tag)
    if rendered[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:at]
    return rendered[:at].rstrip()  # the template trimmed trailing space after the content


def _error_reason(exc: BaseException) -> str:
    # Like vLLM's _template_error_reason: the most specific Jinja error in the chain, else the error.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, jinja2.TemplateError):
            return str(current)
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


@functools.lru_cache(maxsize=64)
def compile_chat_template(source: str) -> ChatTemplate:
    """Compile (and cache: requests may carry their own template) a template. `ChatTemplateError` on
    syntax errors."""
    try:
        template = _ENV.from_string(source)
        content_format = detect_content_format(_ENV.parse(source))
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"invalid chat template: {exc}") from exc
    developer = '"developer"' in source or "'developer'" in source
    return ChatTemplate(
        source=source, template=template, content_format=content_format, supports_developer_role=developer
    )


def select_chat_template(
    templates: Mapping[str, str], requested: str | None = None, *, has_tools: bool = False
) -> str:
    """The template source to use, as transformers' ``get_chat_template`` picks it.

    ``templates`` are the model's (name -> source; ``"default"`` for a single one). ``requested`` is a
    template name or a literal template (request ``chat_template`` or the server's ``--chat-template``).
    With several templates and none requested: ``"tool_use"`` if the request has tools and the model has
    one, else ``"default"``. Raises `ChatTemplateError` if nothing applies.
    """
    # transformers keeps a lone "default" template as a string and anything else as a name -> source dict.
    named = len(templates) > 1 or (len(templates) == 1 and "default" not in templates)
    if requested is not None:
        return templates.get(requested, requested) if named else requested
    if named:
        if has_tools and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ChatTemplateError(
            "This model has multiple chat templates with no default specified! Available template names "
            f"are {sorted(templates)}."
        )
    if templates:
        return next(iter(templates.values()))
    raise ChatTemplateError(
        "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat "
        "template if the tokenizer does not define one."
    )
