"""Logprobs shapes (``api/logprobs.py``) against vLLM 0.32's own code, run in the engine venv.

The same synthetic engine output (prompt-logprob rows, sampled rows with top-k, in chunks) goes through
vLLM's ``LogprobsProcessor`` and response builders (``logprobs_oracle.py``) and through ours; the JSON
must be equal: non-streamed choices (``logprobs`` and the raw ``prompt_logprobs`` field) and each
streamed chunk's ``logprobs``. The rows are built to hit the corners: multi-byte characters split over
byte tokens (the byte-fallback correction with context), top-k ids whose strings collide, the sampled
id repeated in the top-k with another value, ``-inf`` and values below -9999, sampled tokens outside
the top-k, echo with ``max_tokens`` 0 and >0, ``return_tokens_as_token_ids``, one-token prompts.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.vllm_oracle import run_in_engine_venv
from trio_front.api import logprobs as lp
from trio_front.engine import wire
from trio_front.serving.generation import Chunk
from trio_front.text.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-llama"
ORACLE = Path(__file__).with_name("logprobs_oracle.py")
_CACHE: dict[str, list[Any]] = {}


def oracle(cases: list[dict[str, Any]], model: Path = TINY) -> list[Any]:
    payload = {"model": str(model), "cases": cases}
    key = json.dumps(payload)
    if key not in _CACHE:
        _CACHE[key] = run_in_engine_venv([str(ORACLE)], payload)
    answers = _CACHE[key]
    for answer in answers:
        assert not (isinstance(answer, dict) and "error" in answer), answer
    return answers


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_pretrained(TINY)


# ------------------------------------------------------------------------------------ synthetic output


def f32(x: float) -> float:
    """What a float32 tensor element becomes in Python (both sides see the same double)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def partial_byte_ids(tok: Tokenizer) -> list[int]:
    """Ids that decode alone to a string ending in U+FFFD (incomplete UTF-8 bytes)."""
    return [i for i in range(tok.vocab_size) if tok.decode([i], skip_special_tokens=False).endswith("\ufffd")]


def rows(rng: random.Random, tok: Tokenizer, chosen: list[int], k: int, partial: list[int]) -> dict[str, Any]:
    """Engine rows for *chosen* tokens: column 0 the chosen id, then *k* top ids (``k == -1``: the whole
    vocabulary, as ``logprobs=-1`` asks), values descending, with corner cases mixed in."""
    vocab = tok.vocab_size
    width = vocab if k == -1 else k
    out: dict[str, Any] = {"token_ids": [], "logprobs": [], "ranks": []}
    for n, token in enumerate(chosen):
        if width == vocab:
            top = rng.sample(range(vocab), vocab)
        else:
            pool = [*rng.sample(partial, min(3, len(partial))), *rng.sample(range(vocab), width + 3)]
            top = list(dict.fromkeys(rng.sample(pool, len(pool))))[:width]
        if width and rng.random() < 0.5 and token not in top:
            top[rng.randrange(width)] = token  # the chosen id among the top-k, as with greedy sampling
        values = sorted((f32(-rng.uniform(0.01, 12.0)) for _ in top), reverse=True)
        if width >= 3 and n % 4 == 1:
            values[-1] = float("-inf")
        if width >= 2 and n % 5 == 2:
            values[-2] = -12345.5
        if token in top:
            j = top.index(token)
            # Usually the same value as its top-k column; sometimes not, to see which one vLLM keeps.
            own = values[j] if n % 3 else f32(values[j] - 0.25)
            rank = j + 1
        else:
            own = f32((values[-1] if values and values[-1] != float("-inf") else -1.0) - rng.uniform(0.1, 3))
            rank = width + 1 + rng.randrange(50)
        if n % 7 == 3:
            own = float("-inf")
        out["token_ids"].append([token, *top])
        out["logprobs"].append([own, *values])
        out["ranks"].append(rank)
    return out


def split(rng: random.Random, sampled: dict[str, Any]) -> list[dict[str, Any]]:
    """The sampled rows in engine deltas of 1-3 tokens."""
    out, i, total = [], 0, len(sampled["ranks"])
    while i < total:
        n = rng.randint(1, 3)
        out.append({key: value[i : i + n] for key, value in sampled.items()})
        i += n
    return out


PROMPTS = ["Hello wörld ✓ 日本語 🎉 café", "a", "∑ 💡—ok"]
OUTPUTS = ["✓🎉 naïve 日本", "plain words here", "<s> x</s>"]


def build_cases(tok: Tokenizer) -> list[dict[str, Any]]:
    rng = random.Random(1234)
    partial = partial_byte_ids(tok)
    cases: list[dict[str, Any]] = []
    settings = [  # (logprobs, echo, max_tokens, return_as_ids, prompt_logprobs)
        (0, False, 5, False, None),
        (1, False, 5, False, None),
        (3, False, 5, True, None),
        (2, True, 0, False, None),
        (2, True, 5, False, None),
        (4, True, 5, True, None),
        (1, True, 5, False, 0),
        (3, True, 0, False, 5),
        (0, True, 5, False, None),
        (5, False, 5, False, 2),
        (-1, True, 2, False, None),
    ]
    for s, (logprobs, echo, max_tokens, as_ids, prompt_lps) in enumerate(settings):
        text = PROMPTS[s % len(PROMPTS)] if logprobs != -1 else "hi ✓"
        prompt_ids = tok.encode(text, add_special_tokens=text != "a")  # "a" alone: a one-token prompt
        out_ids = tok.encode(OUTPUTS[s % len(OUTPUTS)], add_special_tokens=False)
        if max_tokens == 0:
            out_ids = out_ids[:1]
        elif logprobs == -1:
            out_ids = out_ids[:max_tokens]
        n_prompt = prompt_lps if prompt_lps is not None else (logprobs if echo else None)
        prompt_rows = (
            rows(rng, tok, prompt_ids[1:], n_prompt, partial)
            if n_prompt is not None and len(prompt_ids) > 1
            else None
        )
        cases.append(
            {
                "op": "completion",
                "prompt_ids": prompt_ids,
                "prompt_rows": prompt_rows,
                "chunks": split(rng, rows(rng, tok, out_ids, logprobs, partial)),
                "logprobs": logprobs,
                "echo": echo,
                "max_tokens": max_tokens,
                "return_as_ids": as_ids,
                "prompt_logprobs": prompt_lps,
            }
        )
    for s, (top, as_ids) in enumerate([(0, False), (1, False), (3, False), (5, True), (2, True)]):
        out_ids = tok.encode(OUTPUTS[s % len(OUTPUTS)] + " ∑💡", add_special_tokens=False)
        cases.append(
            {
                "op": "chat",
                "chunks": split(rng, rows(rng, tok, out_ids, top, partial)),
                "top_logprobs": top,
                "return_as_ids": as_ids,
            }
        )
    return cases


def chunks_of(case: dict[str, Any]) -> list[Chunk]:
    return [Chunk("", [r[0] for r in c["token_ids"]], wire.Logprobs(**c)) for c in case["chunks"]]


def ours_completion(tok: Tokenizer, case: dict[str, Any]) -> dict[str, Any]:
    chunks = chunks_of(case)
    plp = wire.PromptLogprobs(**case["prompt_rows"]) if case["prompt_rows"] else None
    top, as_ids, echo = case["logprobs"], case["return_as_ids"], case["echo"]
    with_generated = case["max_tokens"] != 0
    if echo:
        full = lp.echo_completion_logprobs(
            tok, case["prompt_ids"], plp, chunks, top, with_generated=with_generated, return_as_ids=as_ids
        )
    else:
        full = lp.completion_logprobs(tok, chunks, top, offset=0, return_as_ids=as_ids)
    asked = case["prompt_logprobs"] is not None or echo
    field = lp.prompt_logprobs_field(tok, case["prompt_ids"], plp) if asked else None
    stream, context, offset = [], [], 0
    for k, chunk in enumerate(chunks):
        if echo and k == 0:
            part = lp.echo_completion_logprobs(
                tok,
                case["prompt_ids"],
                plp,
                [chunk],
                top,
                with_generated=with_generated,
                offset=offset,
                return_as_ids=as_ids,
                context=context,
            )
        else:
            part = lp.completion_logprobs(
                tok, [chunk], top, offset=offset, return_as_ids=as_ids, context=context
            )
        offset = lp.end_offset(part, offset)
        stream.append(part)
        if echo and not with_generated:
            break
    return {"full": {"logprobs": full, "prompt_logprobs": field}, "stream": stream}


def ours_chat(tok: Tokenizer, case: dict[str, Any]) -> dict[str, Any]:
    chunks = chunks_of(case)
    top, as_ids = case["top_logprobs"], case["return_as_ids"]
    context: list[int] = []
    return {
        "full": lp.chat_logprobs(tok, chunks, top, return_as_ids=as_ids),
        "stream": [lp.chat_logprobs(tok, [c], top, return_as_ids=as_ids, context=context) for c in chunks],
    }


def normalized(value: Any) -> Any:
    """JSON round trip: what a client reads (vLLM's side already went through JSON)."""
    return json.loads(json.dumps(value))


# ------------------------------------------------------------------------------------------------ tests


def metaspace_model(dst: Path) -> Path:
    """A small SentencePiece-style tokenizer (Metaspace pre-tokenizer, byte fallback, Llama-2's decoder):
    the case where vLLM restores the leading spaces that ``decode`` strips from "▁" pieces."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    text = [
        "Hello world, this is a small café text ✓ with 日本語 and naïve words. " * 3,
        "the quick brown fox",
    ]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=40)
    backend.train_from_iterator(text, trainer)
    config = json.loads(backend.to_str())
    vocab = config["model"]["vocab"]
    for piece in [*(f"<0x{b:02X}>" for b in range(256)), "\u2581\u2581", "\u2581\u2581\u2581x"]:
        vocab.setdefault(piece, len(vocab))
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tokenizer.json").write_text(json.dumps(config))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", **special}
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    model_config = {**json.loads((TINY / "config.json").read_text()), "vocab_size": len(vocab)}
    (dst / "config.json").write_text(json.dumps(model_config))
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"tiny": TINY, "metaspace": metaspace_model(tmp_path_factory.mktemp("metaspace"))}


@pytest.fixture(scope="module")
def toks(tok: Tokenizer, models: dict[str, Path]) -> dict[str, Tokenizer]:
    assert lp._leading_space_marker(tok) is None  # ByteLevel: no leading-space restoration
    metaspace = Tokenizer.from_pretrained(models["metaspace"])
    assert lp._leading_space_marker(metaspace) == "\u2581"
    return {"tiny": tok, "metaspace": metaspace}


@pytest.fixture(scope="module")
def vllm(toks: dict[str, Tokenizer], models: dict[str, Path]) -> tuple[list[dict[str, Any]], list[Any]]:
    """All the cases, for both tokenizers, and vLLM's answers, in one oracle run (importing vLLM takes
    ~30 s). ``case["tok"]`` names the tokenizer."""
    cases: list[dict[str, Any]] = []
    for name, tokenizer in toks.items():
        tagged = [{"op": "tokens"}, *build_cases(tokenizer)]
        cases.extend({**case, "tok": name, "model": str(models[name])} for case in tagged)
    return cases, oracle(cases)


def test_token_strings_equal_vllm_for_every_id(
    toks: dict[str, Tokenizer], vllm: tuple[list[Any], list[Any]]
) -> None:
    checked = 0
    for case, answer in zip(*vllm, strict=True):
        if case["op"] != "tokens":
            continue
        tokenizer = toks[case["tok"]]
        ids = list(range(tokenizer.vocab_size))
        assert len(answer["listed"]) == len(ids)
        assert lp.token_strings(tokenizer, ids) == answer["listed"], case["tok"]
        assert [lp._texts(tokenizer).alone(i) for i in ids] == answer["alone"], case["tok"]
        checked += 1
    assert checked == 2
    # The Metaspace tokenizer really has pieces whose restored spaces decode() drops.
    ms = toks["metaspace"]
    assert any(
        lp.token_strings(ms, [i])[0] != ms.decode([i], skip_special_tokens=False)
        for i in range(ms.vocab_size)
    )


def test_shapes_equal_vllm(toks: dict[str, Tokenizer], vllm: tuple[list[Any], list[Any]]) -> None:
    corrected = {name: 0 for name in toks}
    compared = 0
    for case, answer in zip(*vllm, strict=True):
        if case["op"] == "tokens":
            continue
        tokenizer = toks[case["tok"]]
        ours = ours_completion(tokenizer, case) if case["op"] == "completion" else ours_chat(tokenizer, case)
        label = {k: v for k, v in case.items() if k not in ("chunks", "prompt_rows", "prompt_ids")}
        assert normalized(ours["full"]) == answer["full"], label
        assert normalized(ours["stream"]) == answer["stream"], label
        dumped = json.dumps(answer)
        corrected[case["tok"]] += dumped.count('"decoded_token": ""') + dumped.count('"token": ""')
        compared += 1
    assert compared == 32
    # The cases must actually exercise the byte-fallback correction (strings corrected to "").
    assert all(corrected.values()), corrected


def test_cases_hit_the_corners(tok: Tokenizer) -> None:
    """The synthetic rows contain what the parity test claims to cover (no oracle needed)."""
    cases = build_cases(tok)
    comp = [c for c in cases if c["op"] == "completion"]
    all_rows = [
        r for c in cases for r in [*c["chunks"], *([c["prompt_rows"]] if c.get("prompt_rows") else [])]
    ]
    values = [v for r in all_rows for row in r["logprobs"] for v in row]
    assert float("-inf") in values and -12345.5 in values
    dup_other_value = sum(
        1
        for r in all_rows
        for ids, vals in zip(r["token_ids"], r["logprobs"], strict=True)
        if ids[0] in ids[1:] and vals[ids[1:].index(ids[0]) + 1] != vals[0]
    )
    assert dup_other_value > 0
    assert any(c["echo"] and c["max_tokens"] == 0 for c in comp)
    assert any(c["echo"] and c["max_tokens"] > 0 for c in comp)
    assert any(c["return_as_ids"] for c in comp) and any(
        c["return_as_ids"] for c in cases if c["op"] == "chat"
    )
    assert any(c["prompt_rows"] is None and c["echo"] for c in comp)  # one-token prompt
    # String collisions in completions' top_logprobs: two ids of one position with the same string.
    texts = lp._texts(tok)
    collisions = 0
    for r in all_rows:
        for ids in r["token_ids"]:
            strings = [texts.listed(i) for i in dict.fromkeys(ids)]
            collisions += len(strings) != len(set(strings))
    assert collisions > 0


def test_prompt_logprobs_field_shape(tok: Tokenizer) -> None:
    """Hand-checked: key order (actual token first), ranks 1..k for the top-k, -inf clamped only there."""
    ids = tok.encode("Hello world")
    actual = ids[1]
    other = next(i for i in range(10, 100) if i != actual)
    plp = wire.PromptLogprobs(
        token_ids=[[actual, other, actual], *[[t, t, other] for t in ids[2:]]],
        logprobs=[
            [f32(-1.5), f32(-0.5), f32(-1.25)],
            *[[float("-inf"), -20000.0, float("-inf")] for _ in ids[2:]],
        ],
        ranks=[7, *[1 for _ in ids[2:]]],
    )
    field = lp.prompt_logprobs_field(tok, ids, plp)
    assert field[0] is None and len(field) == len(ids)
    first = field[1]
    assert first is not None
    assert list(first) == [str(actual), str(other)]
    # The actual id again in column 2: its key keeps first place, its value is column 2's (rank 2).
    assert first[str(actual)] == {"logprob": f32(-1.25), "rank": 2, "decoded_token": tok.decode([actual])}
    assert first[str(other)]["rank"] == 1
    if len(ids) > 2:
        second = field[2]
        assert second is not None
        assert second[str(ids[2])]["logprob"] == -20000.0  # below -9999 but finite: kept as is
        assert second[str(other)]["logprob"] == -9999.0
    assert lp.prompt_logprobs_field(tok, ids[:1], None) == [None]


def test_return_tokens_as_token_ids_shapes(tok: Tokenizer) -> None:
    ids = tok.encode("✓ ok", add_special_tokens=False)
    rows_ = wire.Logprobs(
        token_ids=[[t, t, 5] for t in ids], logprobs=[[-0.5, -0.5, -2.0] for _ in ids], ranks=[1 for _ in ids]
    )
    chunk = Chunk("", ids, rows_)
    comp = lp.completion_logprobs(tok, [chunk], 2, offset=3, return_as_ids=True)
    assert comp["tokens"] == [f"token_id:{t}" for t in ids]
    assert comp["top_logprobs"][0] == {f"token_id:{ids[0]}": -0.5, "token_id:5": -2.0}
    assert comp["text_offset"][:2] == [3, 3 + len(f"token_id:{ids[0]}")]
    chat = lp.chat_logprobs(tok, [chunk], 2, return_as_ids=True)["content"]
    assert [c["token"] for c in chat] == [f"token_id:{t}" for t in ids]
    assert chat[0]["top_logprobs"][1] == {
        "token": "token_id:5",
        "logprob": -2.0,
        "bytes": list(b"token_id:5"),
    }
    # bytes of the chosen token stay those of its decoded string (vLLM's step_decoded), not of "token_id:..."
    assert "".join(bytes(c["bytes"]).decode() for c in chat) == "✓ ok"


# ------------------------------------------------------------------------ through the HTTP API (mock)


def _assembled(events: list[dict[str, Any]]) -> tuple[str, dict[str, list[Any]]]:
    text, merged = "", {"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []}
    for event in events:
        for choice in event.get("choices", []):
            text += choice["text"]
            for key, values in (choice.get("logprobs") or {}).items():
                merged[key].extend(values)
    return text, merged


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "Hello wörld ✓ 日本語", "echo": True, "logprobs": 2, "max_tokens": 0},
        {"prompt": "Hello wörld ✓ 日本語", "echo": True, "logprobs": 1, "max_tokens": 4},
        {
            "prompt": [1, 50, 60, 70],
            "echo": True,
            "logprobs": 3,
            "max_tokens": 3,
            "return_tokens_as_token_ids": True,
        },
        {"prompt": "abc", "logprobs": 2, "max_tokens": 5},
    ],
)
async def test_completion_logprobs_streamed_equal_full(server: Any, body: dict[str, Any]) -> None:
    """House rule: the streamed logprobs add up to the non-streamed ones (text offsets included); with
    echo the prompt part agrees with the raw ``prompt_logprobs`` field position by position."""
    from .test_http_api import post, sse

    request = {"temperature": 0, **body}
    full = await post(server, "/v1/completions", request)
    assert full.status_code == 200, full.text
    choice = full.json()["choices"][0]
    text, merged = _assembled(await sse(server, "/v1/completions", {**request, "stream": True}))
    assert text == choice["text"]
    assert merged == choice["logprobs"]
    tokens = choice["logprobs"]["tokens"]
    assert choice["logprobs"]["text_offset"] == [sum(len(t) for t in tokens[:k]) for k in range(len(tokens))]
    if not body.get("echo"):
        assert len(tokens) == body["max_tokens"]
        return
    tok: Tokenizer = server.app.state.tokenizer
    ids = body["prompt"] if isinstance(body["prompt"], list) else tok.encode(body["prompt"])
    field = choice["prompt_logprobs"]
    assert len(field) == len(ids) and field[0] is None
    assert len(tokens) == len(ids) + body["max_tokens"]
    assert choice["logprobs"]["token_logprobs"][0] is None and choice["logprobs"]["top_logprobs"][0] is None
    as_ids = body.get("return_tokens_as_token_ids", False)
    for k in range(1, len(ids)):
        entry = field[k][str(ids[k])]
        assert next(iter(field[k])) == str(ids[k])  # the actual prompt token first
        assert tokens[k] == (f"token_id:{ids[k]}" if as_ids else entry["decoded_token"])
        assert choice["logprobs"]["token_logprobs"][k] == max(entry["logprob"], -9999.0)
        assert len(choice["logprobs"]["top_logprobs"][k]) <= body["logprobs"] + 1
    add = server.mock.log.named("add")[-1]
    assert add["max_tokens"] == max(body["max_tokens"], 1)  # echo + 0 runs one step


async def test_chat_logprobs_streamed_equal_full(server: Any) -> None:
    from .test_http_api import post, sse

    request = {
        "messages": [{"role": "user", "content": "x ✓"}],
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    full = await post(server, "/v1/chat/completions", request)
    assert full.status_code == 200, full.text
    content = full.json()["choices"][0]["logprobs"]["content"]
    streamed: list[dict[str, Any]] = []
    for event in await sse(server, "/v1/chat/completions", {**request, "stream": True}):
        for choice in event.get("choices", []):
            streamed.extend((choice.get("logprobs") or {}).get("content") or [])
    assert streamed == content
    assert len(content) == 6 and all(len(c["top_logprobs"]) == 3 for c in content)
    # The chosen token leads its top_logprobs when it is among the top-k (the mock samples rank 1).
    assert all(c["top_logprobs"][0]["token"] == c["token"] for c in content)
