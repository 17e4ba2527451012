"""The mock engine's scripted mode: file format, matching, the scripted output's stopping rules, and the
engine and CLI using a script (``trio_front/engine/mock/script.py`` documents the contract)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import tokenizers
import trio

from trio_front.cli import build_parser
from trio_front.engine import wire
from trio_front.engine.client import EngineClient, LinkConfig
from trio_front.engine.mock import (
    MockEngine,
    MockEngineConfig,
    ScriptError,
    eos_seed,
    expected_output,
    load_script,
    logprob_row,
    mock_token,
    parse_script,
)

from .raw_frontend import unique_ipc_addr

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-llama"
EOS = 2
VOCAB = 4096
STOP, LENGTH = wire.FinishReason.STOP, wire.FinishReason.LENGTH


@pytest.fixture(scope="module")
def tok() -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(TINY / "tokenizer.json"))


def encode(tok: tokenizers.Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def write_script(tmp_path: Path, rules: list[dict], tokenizer: str = str(TINY)) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"tokenizer": tokenizer, "rules": rules}))
    return path


# ------------------------------------------------------------------------------------ parsing, matching


def test_text_is_encoded_once_without_special_tokens(tok: tokenizers.Tokenizer) -> None:
    text = "Sure — the weather in Zürich is 21 °C."
    script = parse_script({"rules": [{"when": "weather", "text": text}]}, tok)
    (rule,) = script.rules
    assert list(rule.ids) == encode(tok, text)
    assert 1 not in rule.ids  # no <s> prepended
    assert tok.decode(list(rule.ids), skip_special_tokens=False) == text


def test_first_matching_rule_wins_on_the_decoded_prompt(tok: tokenizers.Tokenizer) -> None:
    script = parse_script(
        {
            "rules": [
                {"when": "<|user|>\nweather", "ids": [10, 11]},  # template markers are part of the text
                {"when": "weather", "ids": [20]},
                {"when": "", "ids": [30]},
            ]
        },
        tok,
    )
    prompt = [1, *encode(tok, "<|user|>\nweather in Paris?")]
    assert script.match(prompt) == (0, [10, 11])
    assert script.match([1, *encode(tok, "the weather")]) == (1, [20])
    assert script.match([1, *encode(tok, "anything")]) == (2, [30])
    assert parse_script({"rules": [{"when": "x", "ids": []}]}, tok).match(encode(tok, "nope")) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "rules"),
        ({"rules": {}}, "rules"),
        ({"rules": [{"text": "a"}]}, "when"),
        ({"rules": [{"when": 3, "text": "a"}]}, "when"),
        ({"rules": [{"when": "a"}]}, "exactly one"),
        ({"rules": [{"when": "a", "text": "b", "ids": [5]}]}, "exactly one"),
        ({"rules": [{"when": "a", "text": 5}]}, "string"),
        ({"rules": [{"when": "a", "ids": [5, -1]}]}, "non-negative"),
        ({"rules": [{"when": "a", "ids": [5, True]}]}, "non-negative"),
        ({"rules": [{"when": "a", "ids": "5"}]}, "non-negative"),
        ({"rules": [{"when": "a", "ids": [4096]}]}, "vocab"),
        ({"rules": [{"when": "a", "txt": "b"}]}, "unknown keys"),
    ],
)
def test_malformed_scripts_are_rejected(tok: tokenizers.Tokenizer, data: object, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script(data, tok, vocab=VOCAB)


def test_load_script_resolves_the_tokenizer_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tokenizer.json").write_bytes((TINY / "tokenizer.json").read_bytes())
    for entry in ("m", "m/tokenizer.json", str(tmp_path / "m")):
        script = load_script(write_script(tmp_path, [{"when": "", "text": "hi"}], entry))
        assert script.rules[0].ids == tuple(encode(script.tokenizer, "hi"))
    with pytest.raises(ScriptError, match="tokenizer"):
        load_script(write_script(tmp_path, [], "missing-dir"))
    with pytest.raises(ScriptError, match="tokenizer"):
        load_script(write_script(tmp_path, [], ""))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ScriptError, match="cannot read"):
        load_script(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------ scripted output

PROMPT = [1, 17, 300, 42]
SCRIPT = [100, 200, 300, 400, 500]


def out(**params) -> tuple[list[int], wire.FinishReason, int | None]:
    max_model_len = params.pop("max_model_len", 2048)
    scripted = params.pop("scripted", SCRIPT)
    e = expected_output(
        PROMPT, wire.SamplingParams(**params), vocab=VOCAB, max_model_len=max_model_len, scripted=scripted
    )
    return e.token_ids, e.finish_reason, e.stop_reason


def test_script_then_eos_stop() -> None:
    assert out(max_tokens=50, eos_token_id=EOS) == ([*SCRIPT, EOS], wire.FinishReason.STOP, None)
    # An empty script is EOS at once; the seed EOS rule does not apply to scripted requests.
    assert out(max_tokens=50, eos_token_id=EOS, scripted=[]) == ([EOS], wire.FinishReason.STOP, None)
    assert out(max_tokens=50, eos_token_id=EOS, seed=eos_seed(2))[0] == [*SCRIPT, EOS]


def test_limits_cut_the_script_with_length() -> None:
    assert out(max_tokens=3, eos_token_id=EOS) == (SCRIPT[:3], wire.FinishReason.LENGTH, None)
    # The EOS after the script is the 6th token: max_tokens=5 ends the request before it.
    assert out(max_tokens=5, eos_token_id=EOS) == (SCRIPT, wire.FinishReason.LENGTH, None)
    # prompt 4 + output 3 reaches max_model_len 7.
    assert out(max_tokens=50, eos_token_id=EOS, max_model_len=7) == (SCRIPT[:3], LENGTH, None)


def test_stop_ids_and_eos_inside_the_script() -> None:
    assert out(max_tokens=50, eos_token_id=EOS, stop_token_ids=[300]) == (
        SCRIPT[:3],
        wire.FinishReason.STOP,
        300,
    )
    scripted = [100, EOS, 300]
    assert out(max_tokens=50, eos_token_id=EOS, scripted=scripted) == ([100, EOS], STOP, None)


def test_min_tokens_masks_like_the_sampler() -> None:
    # The stop id 300 at position 2 is masked (next id up), and EOS waits for min_tokens=7: the ordinary
    # rule fills positions 5 and 6.
    tokens, reason, stop = out(max_tokens=50, eos_token_id=EOS, stop_token_ids=[300], min_tokens=7)
    fill = [mock_token(PROMPT, 5, VOCAB), mock_token(PROMPT, 6, VOCAB)]
    assert tokens == [100, 200, 301, 400, 500, *fill, EOS]
    assert (reason, stop) == (wire.FinishReason.STOP, None)


def test_without_eos_the_ordinary_rule_continues() -> None:
    # vLLM's frontend leaves _eos_token_id unset for ignore_eos; the mock's own ignore_eos does the same.
    tail = [mock_token(PROMPT, i, VOCAB) for i in range(5, 8)]
    assert out(max_tokens=8) == ([*SCRIPT, *tail], wire.FinishReason.LENGTH, None)
    assert out(max_tokens=8, eos_token_id=EOS, ignore_eos=True)[0] == [*SCRIPT, *tail]


# ------------------------------------------------------------------------------------ engine and CLI


@asynccontextmanager
async def linked(script: Path) -> AsyncIterator[tuple[MockEngine, EngineClient]]:
    addr = unique_ipc_addr()
    async with trio.open_nursery() as nursery:
        engine = MockEngine(MockEngineConfig(addr, step_ms=1, script=str(script)))
        await nursery.start(engine.run)
        client = EngineClient(LinkConfig(addr, ping_interval=0))
        await nursery.start(client.run)
        with trio.fail_after(10):
            await client.wait_ready()
        yield engine, client
        nursery.cancel_scope.cancel()


async def test_engine_serves_scripted_and_unscripted_prompts(
    tmp_path: Path, tok: tokenizers.Tokenizer
) -> None:
    text = "<tool_call>\n{}\n</tool_call>"
    script = write_script(
        tmp_path, [{"when": "weather", "text": text}, {"when": "ids please", "ids": [7, 8]}]
    )
    weather = [1, *encode(tok, "<|user|>\nWhat is the weather?</s>")]
    ids = [1, *encode(tok, "ids please")]
    other = [1, *encode(tok, "something else")]
    async with linked(script) as (engine, client):
        got = {}
        for name, prompt in (("weather", weather), ("ids", ids), ("other", other)):
            params = wire.SamplingParams(max_tokens=40, eos_token_id=EOS, logprobs=1)
            tokens, finish, rows = [], None, []
            with trio.fail_after(10):
                async with client.generate(prompt, params, id_prefix=name) as stream:
                    async for delta in stream:
                        tokens += delta.token_ids
                        rows += delta.logprobs.token_ids
                        if delta.finish_reason is not None:  # STOP is 0: falsy
                            finish = delta.finish_reason
            got[name] = tokens, finish, rows
        adds = engine.log.named("add")
    assert got["weather"][0] == [*encode(tok, text), EOS]
    assert tok.decode(got["weather"][0][:-1], skip_special_tokens=False) == text
    assert got["ids"][:2] == ([7, 8, EOS], wire.FinishReason.STOP)
    assert got["other"][:2] == ([mock_token(other, i, VOCAB) for i in range(40)], wire.FinishReason.LENGTH)
    for tokens, _, rows in got.values():
        assert rows == [logprob_row(t, 1, VOCAB)[0] for t in tokens]
    assert [a["script_rule"] for a in adds] == [0, 1, None]


def test_cli_has_the_script_option(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["mock-engine", "--engine-addr", "tcp://127.0.0.1:1", "--script", "s.json"]
    )
    assert args.script == "s.json"
    assert build_parser().parse_args(["mock-engine", "--engine-addr", "x"]).script is None


async def test_cli_subprocess_with_a_bad_script_exits_with_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tokenizer": str(TINY), "rules": [{"when": 1}]}))
    cmd = [sys.executable, "-m", "trio_front.cli", "mock-engine", "--engine-addr", unique_ipc_addr()]
    with trio.fail_after(30):
        proc = await trio.run_process([*cmd, "--script", str(bad)], check=False, capture_stderr=True)
    assert proc.returncode != 0
    assert b"rule 0" in proc.stderr
