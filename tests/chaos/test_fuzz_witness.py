"""The fuzz tests' witnesses can fail: :func:`extra_hazards` flags each engine-killer it is meant to, and
the hostile JSON tokens reach the wire as written."""

from __future__ import annotations

from trio_front.engine import wire
from trio_front.engine.mock.requests import MockRequest

from .fuzz_support import DEEP, RAW_TOKENS, Raw, dumps, extra_hazards


def request(**params: object) -> MockRequest:
    prompt = params.pop("prompt", [1, 2, 3])
    return MockRequest(
        request_id="r",
        prompt_token_ids=prompt,  # type: ignore[arg-type]
        sampling_params=wire.SamplingParams(**params),  # type: ignore[arg-type]
        arrival_time=0.0,
    )


def test_extra_hazards_flags_each_engine_killer() -> None:
    assert extra_hazards(request()) == []
    cases = {
        "prompt_token_ids": request(prompt=[1, 4096]),
        "stop_token_ids": request(stop_token_ids=[-1]),
        "allowed_token_ids": request(allowed_token_ids=[99999]),
        "logit_bias": request(logit_bias={5000: 1.0}),
        "bad_words": request(bad_words_token_ids=[[1], [4096]]),
        "logprobs": request(logprobs=21),
        "prompt_logprobs": request(prompt_logprobs=-1),
        "structured_outputs with 0": request(structured_outputs=wire.StructuredOutputsParams()),
        "structured_outputs with 2": request(
            structured_outputs=wire.StructuredOutputsParams(regex="a", choice=["a"])
        ),
    }
    for needle, req in cases.items():
        problems = extra_hazards(req)
        assert len(problems) == 1 and problems[0].startswith(needle), (needle, problems)


def test_raw_tokens_reach_the_wire_verbatim() -> None:
    text = dumps({"a": Raw("1e400"), "b": [Raw('"\\ud800"'), 2**64], "c": float("nan")})
    assert text == '{"a":1e400,"b":["\\ud800",18446744073709551616],"c":NaN}'
    deep = next(t for t in RAW_TOKENS if t.text.startswith("[["))
    assert deep.text.count("[") == DEEP
