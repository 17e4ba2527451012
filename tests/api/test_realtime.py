"""The Realtime API (text) at /v1/realtime against the mock engine: the official SDK, the beta dialect,
conversation items, cancellation, bad events, and conversations longer than the context."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio_websocket
from openai import OpenAI

from trio_front.api.ws import WSOptions
from trio_front.engine.mock import eos_seed, mock_token

from .ws_fixtures import Client, WSServer, open_client, running_server

MODEL = "tiny-llama"


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}], **extra}


def expected_text(server: WSServer, instructions: str, messages: list[dict[str, str]], k: int) -> str:
    """What the mock engine answers (its token rule) for this conversation, K tokens long."""
    state = server.app.state
    conversation = ([{"role": "system", "content": instructions}] if instructions else []) + messages
    prompt = state.renderer.render(conversation, add_generation_prompt=True).prompt
    ids = state.tokenizer.encode(prompt, add_special_tokens=False)
    return state.tokenizer.decode([mock_token(ids, i, 4096) for i in range(k)])


def sdk_session(server: WSServer) -> dict[str, Any]:
    """Runs in a worker thread: the unmodified sync SDK streams, cancels, and streams again."""
    client = OpenAI(
        api_key="unused", base_url=f"{server.http_url}/v1", websocket_base_url=f"{server.ws_url}/v1"
    )
    out: dict[str, Any] = {}

    def until(conn, kind: str) -> tuple[Any, list[Any]]:  # type: ignore[no-untyped-def]
        seen = []
        for event in conn:
            if event.type == kind:
                return event, seen
            seen.append(event)
        raise AssertionError(f"socket closed before {kind}")

    with client.realtime.connect(model=MODEL) as conn:
        out["created"] = conn.recv()
        conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "instructions": "Be brief.",
                "seed": eos_seed(6),
            }
        )
        out["updated"] = conn.recv()
        conn.conversation.item.create(item=user("Say hello"))
        out["item_added"], _ = until(conn, "conversation.item.done")

        conn.response.create()
        out["done1"], out["events1"] = until(conn, "response.done")

        conn.response.create(response={"seed": 1})  # no EOS: runs until cancelled
        first, _ = until(conn, "response.output_text.delta")
        conn.response.cancel()
        out["done2"], rest = until(conn, "response.done")
        out["deltas2"] = [first.delta] + [e.delta for e in rest if e.type == "response.output_text.delta"]

        conn.conversation.item.create(item=user("And again"))
        conn.response.create()
        out["done3"], out["events3"] = until(conn, "response.done")
        conn.send({"type": "conversation.item.retrieve", "item_id": out["done2"].response.output[0].id})
        out["retrieved"], _ = until(conn, "conversation.item.retrieved")
    return out


async def test_sdk_streams_cancels_and_streams_again() -> None:
    # hypercorn's WebSocket pings on (what keeps proxies from cutting idle sockets): the SDK answers them
    async with running_server(ping_interval=0.05) as server:
        out = await trio.to_thread.run_sync(sdk_session, server)
        await server.settle()

        assert out["created"].type == "session.created"
        assert out["updated"].session.instructions == "Be brief."
        assert out["updated"].session.output_modalities == ["text"]

        done1 = out["done1"].response
        assert done1.status == "completed"
        kinds = [e.type for e in out["events1"]]
        assert kinds[:4] == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
        ]
        assert kinds[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
        ]
        text1 = "".join(e.delta for e in out["events1"] if e.type == "response.output_text.delta")
        expected = expected_text(server, "Be brief.", [{"role": "user", "content": "Say hello"}], 6)
        assert text1 == expected == done1.output[0].content[0].text
        assert done1.usage.output_tokens == 7  # six tokens, then EOS
        assert done1.usage.input_tokens == done1.usage.total_tokens - 7

        done2 = out["done2"].response
        assert done2.status == "cancelled" and done2.status_details.reason == "client_cancelled"
        partial = "".join(out["deltas2"])
        assert done2.output[0].status == "incomplete" and done2.output[0].content[0].text == partial
        assert 1 <= done2.usage.output_tokens < 1000
        # The truncated answer stays in the conversation, as at OpenAI.
        assert out["retrieved"].item.content[0].text == partial

        assert out["done3"].response.status == "completed"
        adds, ends = server.adds(), server.ends()
        assert len(adds) == 3
        assert [ends[rid] for rid in adds] == [["finish"], ["abort"], ["finish"]]
        server.assert_every_request_ended_once()


async def test_beta_dialect_names() -> None:
    async with running_server() as server:
        headers = [(b"OpenAI-Beta", b"realtime=v1")]
        async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}", extra_headers=headers) as conn:
            c = Client(conn)
            created = await c.recv()
            assert created["type"] == "session.created" and created["session"]["modalities"] == ["text"]
            assert (await c.recv())["type"] == "conversation.created"
            await c.send({"type": "session.update", "session": {"modalities": ["text"], "seed": eos_seed(3)}})
            assert (await c.recv())["type"] == "session.updated"
            await c.send({"type": "conversation.item.create", "item": user("hi")})
            assert (await c.recv())["type"] == "conversation.item.created"
            await c.send({"type": "response.create"})
            done, seen = await c.until("response.done")
            kinds = [e["type"] for e in seen]
            assert "response.text.delta" in kinds and "response.text.done" in kinds
            assert "conversation.item.created" in kinds and "conversation.item.done" not in kinds
            assert done["response"]["output"][0]["content"][0]["type"] == "text"


async def test_bad_events_get_errors_and_the_socket_stays_open() -> None:
    async with running_server() as server:
        async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}") as conn:
            c = Client(conn)
            await c.recv()

            async def error_for(event: dict[str, Any] | str) -> dict[str, Any]:
                await c.send(event)
                reply = await c.recv()
                assert reply["type"] == "error", reply
                return reply["error"]

            assert (await error_for("{not json"))["code"] == "invalid_json"
            assert (await error_for("[1, 2]"))["code"] == "invalid_event"
            unknown = await error_for({"type": "no.such.event", "event_id": "evt_1"})
            assert unknown["param"] == "type" and unknown["event_id"] == "evt_1"
            assert (await error_for({"type": "input_audio_buffer.append", "audio": ""}))[
                "code"
            ] == "unsupported_event"
            assert (await error_for({"type": "response.cancel"}))["code"] == "response_cancel_not_active"
            assert (await error_for({"type": "conversation.item.delete", "item_id": "nope"}))[
                "code"
            ] == "item_not_found"
            audio = await error_for({"type": "session.update", "session": {"output_modalities": ["audio"]}})
            assert audio["code"] == "unsupported_modality"
            assert (await error_for({"type": "session.update", "session": {"temperature": 9}}))[
                "code"
            ] == "invalid_value"
            image = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_image", "image_url": "x"}],
            }
            assert (await error_for({"type": "conversation.item.create", "item": image}))["code"] == (
                "unsupported_content_type"
            )

            # A second response.create while one runs.
            await c.send({"type": "conversation.item.create", "item": user("go on")})
            await c.until("conversation.item.done")
            await c.send({"type": "response.create", "response": {"max_output_tokens": 500}})
            await c.until("response.output_text.delta")
            await c.send({"type": "response.create", "event_id": "evt_2"})
            error, _ = await c.until("error")
            assert error["error"]["code"] == "conversation_already_has_active_response"
            assert error["error"]["event_id"] == "evt_2"
            await c.send({"type": "response.cancel"})
            done, _ = await c.until("response.done")
            assert done["response"]["status"] == "cancelled"

            # Still usable.
            await c.send({"type": "response.create", "response": {"max_output_tokens": 3}})
            done, _ = await c.until("response.done")
            assert done["response"]["status"] == "incomplete"
            assert done["response"]["status_details"]["reason"] == "max_output_tokens"
        await server.settle()
        server.assert_every_request_ended_once()


async def test_conversation_items_order_delete_and_truncate() -> None:
    async with running_server() as server:
        async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}") as conn:
            c = Client(conn)
            await c.recv()
            await c.send({"type": "conversation.item.create", "item": user("second", id="b")})
            added, _ = await c.until("conversation.item.done")
            assert added["previous_item_id"] is None
            await c.send(
                {
                    "type": "conversation.item.create",
                    "item": user("first", id="a"),
                    "previous_item_id": "root",
                }
            )
            added, _ = await c.until("conversation.item.done")
            assert added["previous_item_id"] is None
            await c.send({"type": "conversation.item.create", "item": user("dup", id="a")})
            assert (await c.until("error"))[0]["error"]["code"] == "duplicate_item_id"
            assistant = {"type": "message", "role": "assistant", "id": "c",
                         "content": [{"type": "output_text", "text": "an earlier answer"}]}  # fmt: skip
            await c.send({"type": "conversation.item.create", "item": assistant, "previous_item_id": "b"})
            added, _ = await c.until("conversation.item.done")
            assert added["previous_item_id"] == "b"

            await c.send(
                {"type": "conversation.item.truncate", "item_id": "c", "content_index": 0, "audio_end_ms": 5}
            )
            assert (await c.until("error"))[0]["error"]["param"] == "audio_end_ms"
            await c.send(
                {"type": "conversation.item.truncate", "item_id": "c", "content_index": 0, "audio_end_ms": 0}
            )
            truncated, _ = await c.until("conversation.item.truncated")
            assert truncated["item_id"] == "c"
            await c.send({"type": "conversation.item.retrieve", "item_id": "c"})
            retrieved, _ = await c.until("conversation.item.retrieved")
            assert retrieved["item"]["content"][0]["text"] == ""

            await c.send({"type": "conversation.item.delete", "item_id": "a"})
            assert (await c.until("conversation.item.deleted"))[0]["item_id"] == "a"
            await c.send({"type": "session.update", "session": {"seed": eos_seed(4)}})
            await c.send({"type": "response.create"})
            done, seen = await c.until("response.done")
            text = "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta")
            messages = [{"role": "user", "content": "second"}, {"role": "assistant", "content": ""}]
            assert text == expected_text(server, "", messages, 4)

            # Out of band: its own input, nothing added to the conversation.
            oob = {"conversation": "none", "input": [user("elsewhere")], "metadata": {"k": "v"}}
            await c.send({"type": "response.create", "response": oob})
            done, seen = await c.until("response.done")
            assert done["response"]["conversation_id"] is None and done["response"]["metadata"] == {"k": "v"}
            assert not any(e["type"].startswith("conversation.") for e in seen)
            text = "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta")
            assert text == expected_text(server, "", [{"role": "user", "content": "elsewhere"}], 4)


@pytest.mark.parametrize("truncation", ["disabled", "auto"])
async def test_conversation_longer_than_the_context(truncation: str) -> None:
    async with running_server(max_model_len=96) as server:
        async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}") as conn:
            c = Client(conn)
            await c.recv()
            await c.send(
                {"type": "session.update", "session": {"truncation": truncation, "max_output_tokens": 8}}
            )
            await c.until("session.updated")
            for i in range(12):
                await c.send({"type": "conversation.item.create", "item": user(f"message number {i} " * 3)})
                await c.until("conversation.item.done")
            await c.send({"type": "response.create"})
            reply = await c.recv()
            if truncation == "disabled":
                assert reply["type"] == "error" and reply["error"]["code"] == "context_length_exceeded"
                assert not server.adds()
            else:
                assert reply["type"] == "response.created"
                done, _ = await c.until("response.done")
                assert done["response"]["status"] == "incomplete"  # 8 tokens, as asked
                assert server.mock.log.named("add")[-1]["prompt_tokens"] + 8 <= 96
                # Unbounded output: truncation keeps a quarter of the context free for the answer.
                await c.send({"type": "response.create", "response": {"max_output_tokens": "inf"}})
                done, _ = await c.until("response.done")
                assert done["response"]["status"] == "incomplete"
                prompt_tokens = server.mock.log.named("add")[-1]["prompt_tokens"]
                assert prompt_tokens + 96 // 4 <= 96
                assert done["response"]["usage"]["output_tokens"] == 96 - prompt_tokens


async def test_unknown_model_is_refused_at_the_upgrade() -> None:
    async with running_server() as server:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with open_client(f"{server.ws_url}/v1/realtime?model=gpt-nothing"):
                pass
        assert info.value.status_code == 404


async def test_closing_the_socket_aborts_the_response() -> None:
    async with running_server() as server:
        async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}") as conn:
            c = Client(conn)
            await c.recv()
            await c.send({"type": "conversation.item.create", "item": user("talk")})
            await c.send({"type": "response.create"})
            await c.until("response.output_text.delta")
        await server.settle()
        assert [server.ends()[rid] for rid in server.adds()] == [["abort"]]
        assert server.stats.open_sockets == 0 and server.stats.running_responses == 0


async def test_conversation_item_limit() -> None:
    async with running_server(ws=WSOptions(max_conversation_items=2)) as server:
        async with open_client(f"{server.ws_url}/v1/realtime?model={MODEL}") as conn:
            c = Client(conn)
            await c.recv()
            for _ in range(2):
                await c.send({"type": "conversation.item.create", "item": user("x")})
                await c.until("conversation.item.done")
            await c.send({"type": "conversation.item.create", "item": user("x")})
            assert (await c.recv())["error"]["code"] == "conversation_too_large"
