"""The rule of the request surface: every field of ``/v1/completions`` and ``/v1/chat/completions`` is
either honoured or refused with a 400 naming it — nothing is accepted and ignored.

(a) Every field of vLLM 0.32's own ``CompletionRequest`` / ``ChatCompletionRequest`` (read from the engine
    venv) is declared on our model, so none is silently dropped as an unknown key; the defaults agree.
(b) For every field of *our* models, a request with a non-default value (:data:`SAMPLES`) sent to
    trio-front on the mock engine either gets a 4xx whose ``param`` names the field, or changes what the
    engine received (every decoded ``EngineCoreRequest`` of the request, ids and arrival times aside),
    or changes the response (ids and ``created`` aside). :data:`INVISIBLE` lists the few fields whose
    effect cannot be seen that way, each with the reason and where it is tested instead.

Each sample is sent next to a baseline request that differs only in that field (companion fields such as
``logprobs`` for ``top_logprobs`` go into both)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import msgspec
import pytest
import trio

from tests.vllm_oracle import run_in_engine_venv
from trio_front.api.models import ChatCompletionRequest, CompletionRequest
from trio_front.engine import wire
from trio_front.engine.mock.requests import decode_add

from .conftest import MODEL, Server, start_server

# --------------------------------------------------------------------------------------------------
# vLLM's own request models

_VLLM_FIELDS = r"""
import json, sys
from pydantic_core import PydanticUndefined
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
out = {}
for key, cls in (("completion", CompletionRequest), ("chat", ChatCompletionRequest)):
    fields = {}
    for name, f in cls.model_fields.items():
        if f.is_required():
            fields[name] = {"required": True}
        elif f.default_factory is not None:
            try:
                fields[name] = {"default": f.default_factory()}
            except TypeError:
                fields[name] = {"factory": True}
        else:
            d = f.default
            plain = isinstance(d, (type(None), bool, int, float, str, list, dict))
            fields[name] = {"default": d if plain else repr(d)}
    out[key] = fields
print(json.dumps(out, default=repr))
"""


@functools.cache
def vllm_fields() -> dict[str, dict[str, Any]]:
    """``{"completion"|"chat": {field: {"default": v} | {"required": True} | {"factory": True}}}``."""
    return run_in_engine_venv(["-c", _VLLM_FIELDS])


OUR_MODELS = {"completion": CompletionRequest, "chat": ChatCompletionRequest}

#: Our default is a different spelling of vLLM's (same behaviour), or the field is ours alone.
SAME_DEFAULT: dict[tuple[str, str], str] = {
    ("chat", "tool_choice"): "None = vLLM's 'none' without tools and its 'auto' with tools",
    ("chat", "parallel_tool_calls"): "None is read as true (assistant/tools.py)",
    ("chat", "top_logprobs"): "None reads as 0, as vLLM's BeforeValidator maps null to 0",
    ("completion", "request_id"): "vLLM's default factory draws a random id; so does base_request_id",
    ("chat", "request_id"): "vLLM's default factory draws a random id; so does base_request_id",
}
ONLY_OURS = {
    "best_of": "vLLM 0.32 dropped it (extra keys are ignored there); declared so best_of > 1 is a 400",
}


def _equivalent(ours: Any, theirs: Any) -> bool:
    if ours == theirs:
        return True
    empty = (None, [], {})
    return ours in empty and theirs in empty  # None and an empty list/dict behave the same here


@pytest.mark.parametrize("api", ["completion", "chat"])
def test_every_vllm_field_is_declared_with_its_default(api: str) -> None:
    theirs = vllm_fields()[api]
    ours = {a.name: a for a in attrs.fields(OUR_MODELS[api])}
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"vLLM fields that would be dropped as unknown keys: {missing}"
    extra = sorted(set(ours) - set(theirs) - set(ONLY_OURS))
    assert not extra, f"fields vLLM 0.32 does not have (list them in ONLY_OURS with a reason): {extra}"
    wrong = {}
    for name, spec in theirs.items():
        if (api, name) in SAME_DEFAULT or "default" not in spec:
            continue
        default = ours[name].default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if not _equivalent(default, spec["default"]):
            wrong[name] = (default, spec["default"])
    assert not wrong, f"defaults differing from vLLM's (ours, vLLM's): {wrong}"


# --------------------------------------------------------------------------------------------------
# Every field has an effect (or is refused by name)

#: A template that shows what chat renders: tools, documents, reasoning_effort and a template kwarg, so
#: their effect reaches the prompt (tiny-llama's own template ignores them).
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if tools %}T:{{ tools | tojson }}\n{% endif %}"
    "{% if documents %}D:{{ documents | tojson }}\n{% endif %}"
    "{% if reasoning_effort %}R:{{ reasoning_effort }}\n{% endif %}"
    "{% if flag %}F\n{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}},
]
BASE = {
    "completion": {"prompt": "The quick brown fox jumps over the lazy dog", "max_tokens": 6},
    "chat": {
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 6,
        "chat_template": TEMPLATE,
    },
}


@attrs.frozen
class Sample:
    """A non-default *value* for a field, sent with *with_* (also in the baseline). *value* may be a
    function of the baseline's JSON response (a stop string taken from its text)."""

    value: Any
    with_: dict[str, Any] = attrs.field(factory=dict)


def _stop_from(response: dict[str, Any]) -> list[str]:
    choice = response["choices"][0]
    text = choice["text"] if "text" in choice else choice["message"]["content"]
    assert len(text) >= 6, text
    return [text[2:5]]


COMMON: dict[str, Sample] = {
    "model": Sample(str(MODEL)),  # the model path is the model too; the response names what was asked
    "temperature": Sample(0.5),
    "top_p": Sample(0.5),
    "top_k": Sample(5),
    "min_p": Sample(0.1),
    "presence_penalty": Sample(0.5),
    "frequency_penalty": Sample(0.5),
    "repetition_penalty": Sample(1.2),
    "seed": Sample(7),
    "n": Sample(2),
    "stop": Sample(_stop_from),
    "stop_token_ids": Sample([5]),
    "ignore_eos": Sample(True),
    "min_tokens": Sample(2),
    "include_stop_str_in_output": Sample(True),
    "skip_special_tokens": Sample(False),
    "spaces_between_special_tokens": Sample(False),
    "logit_bias": Sample({"5": 1.0}),
    "allowed_token_ids": Sample([5, 6, 7]),
    "stream": Sample(True),
    "stream_options": Sample({"include_usage": True}, {"stream": True}),
    "priority": Sample(1),
    "cache_salt": Sample("salt"),
    "request_id": Sample("walk-request-id"),
    "use_beam_search": Sample(True),
    "length_penalty": Sample(0.5),
    "truncate_prompt_tokens": Sample(3),
    "truncation_side": Sample("right", {"truncate_prompt_tokens": 3}),  # "left" is the default side
    "prompt_logprobs": Sample(1),
    "bad_words": Sample(["hello"]),
    "return_tokens_as_token_ids": Sample(True),
    "return_token_ids": Sample(True),
    "vllm_xargs": Sample({"walk": 1}),
    "kv_transfer_params": Sample({"do_remote_prefill": True}),
    "ec_transfer_params": Sample({"x": 1}),
    "watermarking": Sample(True),
    "logprob_token_ids": Sample([5]),
    "session_id": Sample("session-1"),
    "routed_experts_prompt_start": Sample(1),
    "return_token_offsets": Sample(True),
    "mm_payload": Sample("none"),
    "return_mm_kwargs": Sample(False),
    "repetition_detection": Sample({"max_pattern_size": 2, "min_count": 2}),
    "thinking_token_budget": Sample(5),
    "stream_interval": Sample(2, {"stream": True}),
    "structured_outputs": Sample({"regex": "[a-z]+"}),
    "response_format": Sample({"type": "json_object"}),
}
SAMPLES: dict[str, dict[str, Sample]] = {
    "completion": {
        **COMMON,
        "prompt": Sample("A different prompt entirely"),
        "max_tokens": Sample(3),
        "logprobs": Sample(2),
        "echo": Sample(True),
        "suffix": Sample("the end"),
        "best_of": Sample(2),
        "add_special_tokens": Sample(False),
        "prompt_embeds": Sample("AAAA"),
        "return_tokens_as_token_ids": Sample(True, {"logprobs": 1}),
    },
    "chat": {
        **COMMON,
        "messages": Sample([{"role": "user", "content": "Something else"}]),
        "max_tokens": Sample(3),
        "max_completion_tokens": Sample(3),
        "logprobs": Sample(True),
        "top_logprobs": Sample(2, {"logprobs": True}),
        "echo": Sample(
            True,
            {
                "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Once"}],
                "add_generation_prompt": False,
                "continue_final_message": True,
            },
        ),
        "tools": Sample(TOOLS),
        "tool_choice": Sample("required", {"tools": TOOLS}),
        "parallel_tool_calls": Sample(False, {"tools": TOOLS, "tool_choice": "required"}),
        "add_generation_prompt": Sample(False),
        "continue_final_message": Sample(True, {"add_generation_prompt": False}),
        "add_special_tokens": Sample(True),
        "chat_template": Sample(TEMPLATE.replace("<|assistant|>", "<|bot|>")),
        "chat_template_kwargs": Sample({"flag": True}),
        "documents": Sample([{"title": "a", "text": "b"}]),
        "reasoning_effort": Sample("low"),
        "media_io_kwargs": Sample({"image": {"x": 1}}),
        "mm_processor_kwargs": Sample({"x": 1}),
        "return_prompt_text": Sample(True),
        "return_tokens_as_token_ids": Sample(True, {"logprobs": True}),
    },
}

#: Fields whose effect the walk cannot observe, and why that is right.
INVISIBLE: dict[str, str] = {
    "user": "OpenAI's end-user id for abuse monitoring; vLLM 0.32 ignores it too (its protocol says so). "
    "Refusing it would break OpenAI clients that always send it; it changes no output by design",
    "include_reasoning": "acts only with --reasoning-parser (no reasoning is parsed out otherwise, in "
    "vLLM too); tests/api/test_chat_tools.py::test_include_reasoning_false_hides_it covers it",
    "model": "any of the base model's names answers as the first served name, as vLLM's model_name does; "
    "adapters and aliases are covered by tests/api/test_served_names.py and test_lora.py",
}

#: Fields checked by a predicate instead of a diff (the effect is an id, which the diff ignores).
CUSTOM: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], bool]] = {
    "request_id": lambda response, adds: (
        "walk-request-id" in json.dumps(response)
        or any("walk-request-id" in (a.get("request_id") or "") for a in adds)
    ),
}

_IGNORED_ADD_FIELDS = ("request_id", "arrival_time", "external_req_id")
_IGNORED_RESPONSE_KEYS = frozenset({"id", "created"})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _IGNORED_RESPONSE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@attrs.define
class Outcome:
    status: int
    body: Any  # JSON (dict) or the list of SSE events
    adds: list[dict[str, Any]]


class Walker:
    """Sends requests to one server and records the ADDs each of them made, decoded as the mock engine
    decodes them (``wire.add_frames`` is the client's single way to send one)."""

    def __init__(self, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.adds: list[Any] = []
        original = wire.add_frames

        def recording(identity: bytes, request: wire.EngineCoreRequest) -> list[bytes]:
            frames = original(identity, request)
            self.adds.append(decode_add(frames[2]))
            return frames

        monkeypatch.setattr(wire, "add_frames", recording)

    async def send(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Outcome:
        self.adds.clear()
        r = await client.post(path, json=body, timeout=30)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            events = [
                json.loads(line[6:])
                for line in r.text.splitlines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]
            payload: Any = events
        else:
            payload = r.json()
        await self.server.settle()
        adds = [
            {
                f: msgspec.to_builtins(getattr(a, f))
                for f in a.__struct_fields__
                if f not in _IGNORED_ADD_FIELDS
            }
            | {"request_id": a.request_id}
            for a in self.adds
        ]
        return Outcome(r.status_code, payload, adds)


def _without_ids(adds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "request_id"} for a in adds]


async def walk(api: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``{field: why it fails the rule}`` for every field of *api*'s model."""
    path = "/v1/completions" if api == "completion" else "/v1/chat/completions"
    fields = [a.name for a in attrs.fields(OUR_MODELS[api])]
    unsampled = sorted(set(fields) - set(SAMPLES[api]) - set(INVISIBLE))
    assert not unsampled, f"fields without a sample value (add one to SAMPLES or INVISIBLE): {unsampled}"
    failures: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery,
            frontend={
                "enable_auto_tool_choice": True,
                "tool_call_parser": "hermes",
                "trust_request_chat_template": True,  # the chat baseline brings its own template
            },
        )
        walker = Walker(server, monkeypatch)
        baselines: dict[str, Outcome] = {}
        async with httpx.AsyncClient(base_url=server.url) as client:
            for field in fields:
                if field in INVISIBLE:
                    continue
                sample = SAMPLES[api][field]
                base_body = {**BASE[api], **sample.with_}
                key = json.dumps(base_body, sort_keys=True)
                if key not in baselines:
                    baselines[key] = await walker.send(client, path, base_body)
                base = baselines[key]
                if base.status != 200:
                    failures[field] = f"baseline {base_body} failed: {base.status} {base.body}"
                    continue
                value = sample.value(base.body) if callable(sample.value) else sample.value
                got = await walker.send(client, path, {**base_body, field: value})
                ok, how = _judge(field, got, base)
                (VERDICTS[api] if ok else failures)[field] = how
        nursery.cancel_scope.cancel()
    return failures


#: ``{api: {field: how the last walk saw it honoured}}`` (``-rA`` / a debugger shows them).
VERDICTS: dict[str, dict[str, str]] = {"completion": {}, "chat": {}}


def _judge(field: str, got: Outcome, base: Outcome) -> tuple[bool, str]:
    """``(True, how it was honoured or refused)`` or ``(False, why it breaks the rule)``."""
    if 400 <= got.status < 500:
        error = got.body.get("error", {}) if isinstance(got.body, dict) else {}
        if error.get("param") == field:
            return True, f"refused: {error.get('message')}"
        return (
            False,
            f"{got.status} not naming the field: param={error.get('param')!r} {error.get('message')!r}",
        )
    if got.status != 200:
        return False, f"status {got.status}: {got.body}"
    if field in CUSTOM:
        return (True, "custom check") if CUSTOM[field](got.body, got.adds) else (False, "effect missing")
    if _without_ids(got.adds) != _without_ids(base.adds):
        return True, "engine request differs"
    if _strip(got.body) != _strip(base.body):
        return True, "response differs"
    return False, "accepted but unused: the engine received the same requests and the response is the same"


@pytest.mark.parametrize("api", ["completion", "chat"])
async def test_every_field_is_honoured_or_refused_by_name(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = await walk(api, monkeypatch)
    for field, how in sorted(VERDICTS[api].items()):
        print(f"{api}.{field}: {how}")
    assert not failures, "\n".join(f"{api}.{f}: {why}" for f, why in sorted(failures.items()))


def test_the_invisible_table_is_small_and_real() -> None:
    """The exemptions are fields the models declare (a stale entry would hide nothing but mislead)."""
    declared = {a.name for m in OUR_MODELS.values() for a in attrs.fields(m)}
    assert set(INVISIBLE) <= declared
    assert len(INVISIBLE) <= 3
