"""The unmodified anthropic SDK against /v1/messages on the scripted mock engine: each case non-streamed
and through the SDK's stream helper, whose final message must equal the JSON one (ids and signatures
aside, they are random)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx

from ..conftest import Server
from .conftest import WEATHER, sdk


def _plain(message: anthropic.types.Message) -> dict[str, Any]:
    data = message.model_dump()
    data["id"] = None
    for block in data["content"]:
        if block["type"] == "tool_use":
            block["id"] = None
        if block["type"] == "thinking":
            block["signature"] = None
    return data


async def both(server: Server, marker: str, **kwargs: Any) -> anthropic.types.Message:
    """The JSON message, after checking the streamed one equals it."""
    body: dict[str, Any] = {
        "model": "tiny-llama",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": f"{marker} please"}],
        **kwargs,
    }
    client = sdk(server)
    plain = await client.messages.create(**body)
    async with client.messages.stream(**body) as stream:
        final = await stream.get_final_message()
    assert _plain(final) == _plain(plain)
    assert plain.id.startswith("chatcmpl-") and final.id.startswith("chatcmpl-")  # vLLM's ids
    for message in (plain, final):
        for block in message.content:
            if block.type == "tool_use":
                assert block.id.startswith("chatcmpl-tool-")
            if block.type == "thinking":
                assert len(block.signature) == 32
    return plain


async def test_thinking_then_tool_use(msg_server: Server) -> None:
    message = await both(msg_server, "THINK-CALL", tools=[WEATHER])
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].thinking == "I should look it up."
    assert (message.content[1].name, message.content[1].input) == ("get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0


async def test_several_tool_use_blocks_after_text(msg_server: Server) -> None:
    message = await both(msg_server, "THINK-TWO", tools=[WEATHER])
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[1].text == "\n\nLet me check both."  # the text after </think>, as vLLM's
    assert [b.input["city"] for b in message.content[2:]] == ["Paris", "Oslo"]
    assert message.stop_reason == "tool_use"


async def test_one_tool_use_without_parallel_calls(msg_server: Server) -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    message = await both(msg_server, "THINK-TWO", tools=[WEATHER], tool_choice=choice)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]


async def test_forced_tool(msg_server: Server) -> None:
    choice = {"type": "tool", "name": "get_weather"}
    message = await both(msg_server, "NAMED", tools=[WEATHER], tool_choice=choice)
    assert [(b.type, b.input) for b in message.content] == [("tool_use", {"city": "Rome"})]
    assert message.stop_reason == "tool_use"


async def test_text_after_a_tool_result_turn(msg_server: Server) -> None:
    first = await both(msg_server, "THINK-CALL", tools=[WEATHER])
    call = first.content[1]
    history = [
        {"role": "user", "content": "THINK-CALL please"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": [{"type": "text", "text": "sunny"}],
                },
                {"type": "text", "text": "AFTER-TOOL"},
            ],
        },
    ]
    message = await both(msg_server, "", tools=[WEATHER], messages=history, system="Be brief.")
    assert [(b.type, b.text) for b in message.content] == [("text", "It is sunny in Paris.")]
    assert message.stop_reason == "end_turn"
    # The whole conversation reached the template: thinking, the call, the result.
    count = await sdk(msg_server).messages.count_tokens(
        model="tiny-llama", messages=history, tools=[WEATHER], system="Be brief."
    )
    adds = msg_server.mock.log.named("add")
    assert count.input_tokens == adds[-1]["prompt_tokens"] == message.usage.input_tokens


async def test_stop_sequence(msg_server: Server) -> None:
    message = await both(msg_server, "STOP-SEQ", stop_sequences=["STOP", "never"])
    assert [(b.type, b.text) for b in message.content] == [("text", "Counting: one two ")]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")


async def test_max_tokens(msg_server: Server) -> None:
    message = await both(msg_server, "LONG", max_tokens=5)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5
    assert message.content[0].type == "text" and message.content[0].text.startswith("word")


async def test_plain_text_and_thinking(msg_server: Server) -> None:
    message = await both(
        msg_server,
        "THINK-TEXT",
        metadata={"user_id": "u1"},
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5},
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "\n\nThe answer is 42." and message.stop_reason == "end_turn"


async def test_count_tokens_is_the_prompt_the_engine_gets(msg_server: Server) -> None:
    body = {
        "model": "tiny-llama",
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": "THINK-TEXT how many?"}],
        "tools": [WEATHER],
    }
    count = await sdk(msg_server).messages.count_tokens(**body)
    adds_before = len(msg_server.mock.log.named("add"))
    assert adds_before == 0  # count_tokens sent nothing to the engine
    message = await sdk(msg_server).messages.create(max_tokens=50, **body)
    add = msg_server.mock.log.named("add")[-1]
    assert count.input_tokens == add["prompt_tokens"] == message.usage.input_tokens
    without_system = await sdk(msg_server).messages.count_tokens(**{**body, "system": []})
    assert without_system.input_tokens < count.input_tokens


async def test_raw_stream_events(msg_server: Server) -> None:
    """Anthropic's event sequence with its ``event:`` lines (thinking: signature_delta before its stop)."""
    body = {"model": "tiny-llama", "max_tokens": 100, "stream": True, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "THINK-CALL"}]}  # fmt: skip
    async with httpx.AsyncClient(base_url=msg_server.url, timeout=30) as client:
        r = await client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    collapsed = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    assert collapsed == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",  # thinking (+ signature)
        "content_block_start", "content_block_delta", "content_block_stop",  # tool_use
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert '"signature_delta"' in r.text and '"input_json_delta"' in r.text
