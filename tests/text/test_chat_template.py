"""Chat templates: HF rendering semantics, vLLM's message shaping and kwargs precedence, errors."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from trio_front.text.chat import ChatRenderer
from trio_front.text.chat_template import ChatTemplateError, compile_chat_template, select_chat_template
from trio_front.text.tokenizer import Tokenizer

OPENAI_TEMPLATE = (
    "{% for m in messages %}[{{ m.role }}]"
    "{% for part in m.content %}{{ part.type }}:{{ part.text }};{% endfor %}{% endfor %}"
)
USER = {"role": "user", "content": "hi"}


def render(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return compile_chat_template(template).render(messages, **kwargs)


def test_generation_prompt(tokenizer: Tokenizer) -> None:
    renderer = ChatRenderer(tokenizer)
    prompt = renderer.render([{"role": "system", "content": "be brief"}, USER]).prompt
    assert prompt == "<s><|system|>\nbe brief</s>\n<|user|>\nhi</s>\n<|assistant|>\n"
    assert renderer.render([USER], add_generation_prompt=False).prompt == "<s><|user|>\nhi</s>\n"


def test_continue_final_message(tokenizer: Tokenizer) -> None:
    renderer = ChatRenderer(tokenizer)
    messages = [USER, {"role": "assistant", "content": "Sure, "}]
    prompt = renderer.render(messages, add_generation_prompt=False, continue_final_message=True).prompt
    assert prompt == "<s><|user|>\nhi</s>\n<|assistant|>\nSure, "
    assert messages[1]["content"] == "Sure, "  # the caller's message is untouched
    with pytest.raises(ChatTemplateError, match="not compatible"):
        renderer.render(messages, continue_final_message=True)
    # A template that strips the content: the cut falls before the trimmed whitespace.
    assert render("{{ messages[-1].content | trim }}!", messages, continue_final_message=True) == "Sure,"


def test_continue_final_message_with_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}, {"type": "x"}]
    messages = [{"role": "assistant", "content": parts}]
    out = render(OPENAI_TEMPLATE + "<end>", messages, continue_final_message=True)
    assert out == "[assistant]text:a;image:;text:b"


def test_content_parts_string_format(tokenizer: Tokenizer) -> None:
    parts = [
        {"type": "text", "text": "one"},
        "two",
        {"type": "text", "text": None},
        {"type": "refusal", "refusal": "no"},
    ]
    rendered = ChatRenderer(tokenizer).render([{"role": "user", "content": parts}])
    assert rendered.conversation == [{"role": "user", "content": "one\ntwo\nno"}]
    assert "<|user|>\none\ntwo\nno</s>" in rendered.prompt


def test_content_parts_openai_format(tokenizer: Tokenizer) -> None:
    assert compile_chat_template(OPENAI_TEMPLATE).content_format == "openai"
    assert compile_chat_template(tokenizer.files.chat_templates["default"]).content_format == "string"
    renderer = ChatRenderer(tokenizer, default_template=OPENAI_TEMPLATE)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": "b"},
    ]
    assert renderer.render(messages).prompt == "[user]text:a;[user]text:b;"
    with pytest.raises(ChatTemplateError, match="Unsupported chat content part"):
        renderer.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


def test_content_format_detection_variants() -> None:
    via_var = (
        "{% for message in messages %}{% set c = message['content'] %}"
        "{% for p in c %}{% endfor %}{% endfor %}"
    )
    # vLLM only follows assignments *from* messages; 'c' is a plain variable named differently.
    assert compile_chat_template(via_var).content_format == "string"
    via_content = (
        "{% for message in messages %}{% set content = message.content %}"
        "{% for p in content %}{% endfor %}{% endfor %}"
    )
    assert compile_chat_template(via_content).content_format == "openai"
    via_macro = (
        "{% macro show(x) %}{% for p in x %}{{ p.text }}{% endfor %}{% endmacro %}"
        "{% for message in messages %}{{ show(message['content']) }}{% endfor %}"
    )
    assert compile_chat_template(via_macro).content_format == "openai"
    tuple_target = "{% for i, message in messages %}{% for p in message.content %}{% endfor %}{% endfor %}"
    assert compile_chat_template(tuple_target).content_format == "string"


def test_raise_exception_is_chat_template_error() -> None:
    template = (
        "{% if messages[0].role != 'system' %}"
        "{{ raise_exception('first message must be system') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="first message must be system"):
        render(template, [USER])
    with pytest.raises(ChatTemplateError):
        render("{{ undefined_thing.attr }}", [USER])
    with pytest.raises(ChatTemplateError, match="invalid chat template"):
        compile_chat_template("{% for %}")
    with pytest.raises(ChatTemplateError, match="empty conversation"):
        render("x", [])


def test_sandbox_blocks_attribute_access_and_mutation() -> None:
    with pytest.raises(ChatTemplateError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", [USER])
    with pytest.raises(ChatTemplateError, match=r"unsafe|access"):
        render("{{ messages.append(1) }}", [USER])
    messages = [dict(USER)]
    with pytest.raises(ChatTemplateError):
        render("{{ messages[0].update({'role': 'x'}) }}", messages)
    assert messages == [USER]


def test_environment_helpers() -> None:
    template = (
        "{{ tools | tojson }}|{{ '<&>' | tojson }}|{{ strftime_now('%Y') | length }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|"
        "{% generation %}gen{% endgeneration %}|{{ documents[0].title }}"
    )
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = render(template, [USER, USER], tools=tools, documents=[{"title": "T", "text": "x"}])
    assert out == '[{"type": "function", "function": {"name": "f"}}]|"<&>"|4|user|gen|T'


def test_kwargs_precedence(tokenizer: Tokenizer) -> None:
    template = (
        "{{ bos_token }}|{{ flavour }}|{{ add_generation_prompt }}|{{ enable_thinking }}|{{ tools is none }}"
    )
    renderer = ChatRenderer(tokenizer, default_template=template, default_kwargs={"flavour": "server"})
    assert renderer.render([USER]).prompt == "<s>|server|True||True"
    out = renderer.render(
        [USER],
        chat_template_kwargs={"flavour": "request", "add_generation_prompt": False, "bos_token": "B"},
        reasoning_effort="none",
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    # Explicit request fields beat chat_template_kwargs, which beat the server's and the special tokens.
    assert out.prompt == "B|request|True|False|False"
    assert renderer.render([USER], chat_template_kwargs={"flavour": "auto"}).prompt.split("|")[1] == "server"
    with pytest.raises(ChatTemplateError, match="unexpected"):
        renderer.render([USER], chat_template_kwargs={"messages": []})


def test_select_template() -> None:
    named = {"default": "D", "tool_use": "T"}
    assert select_chat_template(named) == "D"
    assert select_chat_template(named, has_tools=True) == "T"
    assert select_chat_template(named, "tool_use") == "T"
    assert select_chat_template(named, "{{ literal }}") == "{{ literal }}"
    assert select_chat_template({"default": "D"}, "default") == "default"  # a lone template is a string
    with pytest.raises(ChatTemplateError, match="no default"):
        select_chat_template({"a": "A", "b": "B"})
    with pytest.raises(ChatTemplateError, match="must provide a chat template"):
        select_chat_template({})


def test_tool_calls_and_roles(tokenizer: Tokenizer) -> None:
    template = (
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<{{ c.function.arguments.x }}>{% endfor %}"
        "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %};{% endfor %}"
    )
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 5}'}}
    bad = {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    messages = [
        {"role": "developer", "content": "dev"},
        {"role": "system", "content": "sys"},
        {"role": "assistant", "content": None, "tool_calls": [call, bad]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r"}]},
    ]
    renderer = ChatRenderer(tokenizer, default_template=template)
    out = renderer.render(messages, add_generation_prompt=False)
    # No 'developer' in the template: developer -> system, and the system messages merged first.
    assert out.prompt == "system:dev\n\nsys;assistant:<5><>;tool:r#c1;"
    assert call["function"]["arguments"] == '{"x": 5}'  # the request's data is not modified
    aware = renderer.render(
        messages, chat_template=template + "{# 'developer' #}", add_generation_prompt=False
    )
    assert aware.prompt.startswith("developer:dev;system:sys;")


def test_template_cache_is_shared(tokenizer: Tokenizer) -> None:
    source = tokenizer.files.chat_templates["default"]
    assert compile_chat_template(source) is compile_chat_template(source)
    renderer = attrs.evolve(ChatRenderer(tokenizer), content_format="openai")
    parts = renderer.render([{"role": "user", "content": [{"type": "text", "text": "p"}]}]).prompt
    assert parts.endswith("<|user|>\np</s>\n<|assistant|>\n")
