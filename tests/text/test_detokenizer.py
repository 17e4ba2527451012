"""TextStream: incremental text, stop strings across token boundaries, holdback, min_tokens, engine STOP,
and a randomized comparison with a direct (full-string) transcription of vLLM's algorithm."""

from __future__ import annotations

import bisect
import random

import pytest
from tokenizers.decoders import DecodeStream

from trio_front.text import detokenizer as detokenizer_module
from trio_front.text.detokenizer import TextParams, TextStream, Update
from trio_front.text.stop import find_stop
from trio_front.text.tokenizer import Tokenizer

BOS, EOS = 1, 2


def ids_of(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def push_each(stream: TextStream, ids: list[int]) -> list[Update]:
    return [stream.push([t]) for t in ids]


def test_multibyte_split_across_tokens(tokenizer: Tokenizer) -> None:
    text = "héllo wörld 你好 🙂"
    ids = ids_of(tokenizer, text)
    assert len(ids) > len(text)  # several characters need several tokens
    stream = TextStream(tokenizer, [BOS], TextParams())
    pieces = [u.text for u in push_each(stream, ids)]
    assert "".join(pieces) == text
    assert "你" in pieces and "" in pieces  # a character appears whole once its last byte arrives
    assert all("\ufffd" not in p for p in pieces)


def test_prompt_context(tokenizer: Tokenizer) -> None:
    world = ids_of(tokenizer, " world")
    stream = TextStream(tokenizer, [BOS, *ids_of(tokenizer, "hello")], TextParams())
    assert "".join(u.text for u in push_each(stream, world)) == " world"


def test_stop_string_across_boundaries_holds_back(tokenizer: Tokenizer) -> None:
    ids = ids_of(tokenizer, "one two STOP three")
    stream = TextStream(tokenizer, [BOS], TextParams(stop=("STOP",)))
    sent = ""
    for token in ids:
        update = stream.push([token])
        sent += update.text
        # Never any part of the stop string, even while it is being generated token by token.
        assert "S" not in sent
        if update.stop_string:
            assert update == Update(update.text, "STOP", 1, True)
            break
    assert sent == "one two "
    assert stream.finished and stream.push([EOS]).text == ""
    assert stream.token_ids == ids[: len(stream.token_ids)]


def test_include_stop_str_in_output(tokenizer: Tokenizer) -> None:
    ids = ids_of(tokenizer, "one two STOP three")
    stream = TextStream(tokenizer, [BOS], TextParams(stop=("STOP",), include_stop_str_in_output=True))
    out = "".join(u.text for u in push_each(stream, ids))
    assert out == "one two STOP"


def test_several_tokens_in_one_step_drops_the_rest(tokenizer: Tokenizer) -> None:
    ids = ids_of(tokenizer, "ab STOP cd ef")
    stream = TextStream(tokenizer, [BOS], TextParams(stop=("STOP", "cd")))
    update = stream.push(ids)
    assert update.stop_string == "STOP"  # the earliest-ending match wins
    assert update.text == "ab "
    assert stream.token_ids == ids[: update.num_kept]
    assert tokenizer.decode(ids[: update.num_kept]).endswith("STOP")


def test_earliest_end_wins_over_earliest_start() -> None:
    assert find_stop("xabcdy", 6, ["abcd", "bc"], False) == ("bc", 2, 4)
    assert find_stop("xabcdy", 6, ["abcd", "bc"], True) == ("bc", 4, 4)
    # Only new text (plus len(s) - 1 characters before it) is searched.
    assert find_stop("abc", 1, ["a"], False) is None
    assert find_stop("abc", 1, ["bc"], False) == ("bc", 1, 3)


def test_min_tokens_delays_stop_checks(tokenizer: Tokenizer) -> None:
    ids = ids_of(tokenizer, "ab ab ab ab")
    stream = TextStream(tokenizer, [BOS], TextParams(stop=("ab",), min_tokens=3))
    updates = push_each(stream, ids)
    stopped = next(i for i, u in enumerate(updates) if u.stop_string)
    assert stopped >= 3
    assert len(stream.token_ids) == stopped + 1 > 3


def test_engine_stop_token_not_detokenized(tokenizer: Tokenizer) -> None:
    stream = TextStream(tokenizer, [BOS], TextParams(skip_special_tokens=False))
    assert stream.push(ids_of(tokenizer, "hi")).text == "hi"
    final = stream.push([EOS], stop_terminated=True, engine_finished=True)
    assert final == Update("", None, 1, False)
    assert stream.token_ids[-1] == EOS  # counted as an output token all the same
    included = TextStream(
        tokenizer, [BOS], TextParams(skip_special_tokens=False, include_stop_str_in_output=True)
    )
    assert included.push([EOS], stop_terminated=True, engine_finished=True).text == "</s>"


def test_flush_and_take_text(tokenizer: Tokenizer) -> None:
    stream = TextStream(tokenizer, [BOS], TextParams(stop=("xyzw",)))
    assert [u.text for u in push_each(stream, ids_of(tokenizer, "abcdef"))][-1] != "abcdef"
    assert stream.output_text == "abcdef"
    assert stream.flush() == "def"
    assert stream.push(ids_of(tokenizer, "x")) == Update("", None, 0)


def test_spaces_between_special_tokens(tokenizer: Tokenizer) -> None:
    ids = [BOS, EOS, *ids_of(tokenizer, " a"), EOS, EOS]
    for spaces in (True, False):
        stream = TextStream(
            tokenizer, [BOS], TextParams(skip_special_tokens=False, spaces_between_special_tokens=spaces)
        )
        assert "".join(u.text for u in push_each(stream, ids)) == "<s></s> a</s></s>"


def test_detokenize_false(tokenizer: Tokenizer) -> None:
    stream = TextStream(tokenizer, [BOS], TextParams(detokenize=False))
    assert stream.push([5, 6]) == Update("", None, 2)
    assert stream.token_ids == [5, 6]
    with pytest.raises(ValueError, match="detokenize"):
        TextStream(tokenizer, [BOS], TextParams(stop=("a",), detokenize=False))
    with pytest.raises(ValueError, match="empty"):
        TextStream(tokenizer, [BOS], TextParams(stop=("",)))


def test_bad_ids_and_invalid_prefix_reset(tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = TextStream(tokenizer, [BOS], TextParams())
    assert stream.push([-1, 2**40]).text == ""  # vLLM logs these and emits nothing for them
    assert stream.push(ids_of(tokenizer, "ok")).text == "ok"

    created: list[object] = []

    class Failing:
        def __init__(self, ids: list[int] | None = None, skip_special_tokens: bool = False) -> None:
            created.append(ids)

        def step(self, tok: object, token_id: int) -> str:
            if len(created) == 1:
                raise Exception("Invalid prefix encountered while decoding")
            return DecodeStream(skip_special_tokens=True).step(tok, token_id) or ""

    monkeypatch.setattr(detokenizer_module, "DecodeStream", Failing)
    reset = TextStream(tokenizer, [BOS, 5], TextParams())
    assert reset.push(ids_of(tokenizer, "a")).text == "a"
    assert created == [[BOS, 5], None]  # restarted without the prompt context, as vLLM does


# ------------------------------------------------------------------ randomized check of the windowing


def reference(
    tokenizer: Tokenizer, prompt: list[int], steps: list[list[int]], params: TextParams
) -> list[tuple]:
    """vLLM's BaseIncrementalDetokenizer + get_next_output_text(delta=True), transcribed with a full
    output string (no windowing), for comparison."""
    stream = DecodeStream(ids=prompt, skip_special_tokens=params.skip_special_tokens)
    text, token_ids, last_offset, out = "", [], 0, []
    holdback = params.holdback
    for step in steps:
        num_prev = len(token_ids)
        offsets = [len(text)]
        for token in step:
            token_ids.append(token)
            text += stream.step(tokenizer.backend, token) or ""
            offsets.append(len(text))
        stop = None
        if len(token_ids) > params.min_tokens:
            check = offsets[max(params.min_tokens - num_prev, 0)]
            match = find_stop(text, len(text) - check, params.stop, params.include_stop_str_in_output)
            if match is not None:
                stop, truncate_to, end = match
                kept = bisect.bisect_left(offsets, end, lo=1)
                del token_ids[num_prev + kept :]
                text = text[:truncate_to]
        length = len(text) if stop else len(text) - holdback
        delta = text[last_offset:length] if last_offset < length else ""
        last_offset = max(last_offset, length)
        out.append((delta, stop, len(token_ids) - num_prev))
        if stop:
            break
    return out


def test_random_against_full_string_reference(tokenizer: Tokenizer) -> None:
    rng = random.Random(7)
    corpus = ids_of(tokenizer, "abc abd STOP 你好🙂 the end; ab\nab " * 4)
    for _ in range(400):
        ids = [rng.choice(corpus) if rng.random() < 0.8 else rng.randrange(4, 4096) for _ in range(60)]
        text = tokenizer.decode(ids)
        stops = tuple({text[a : a + rng.randint(1, 6)] or "q" for a in rng.sample(range(len(text)), 2)})
        if rng.random() < 0.3:  # long outputs with held-back text and no match
            stops = ("never-there", "STOP!")
        params = TextParams(
            stop=stops, min_tokens=rng.choice([0, 0, 2, 7]), include_stop_str_in_output=rng.random() < 0.3
        )
        steps, i = [], 0
        while i < len(ids):
            n = rng.choice([1, 1, 1, 2, 5])
            steps.append(ids[i : i + n])
            i += n
        stream = TextStream(tokenizer, [BOS], params)
        got = []
        for step in steps:
            update = stream.push(step)
            got.append((update.text, update.stop_string, update.num_kept))
            if update.stop_string:
                break
        assert got == reference(tokenizer, [BOS], steps, params), (stops, params)
