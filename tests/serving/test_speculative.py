"""With speculative decoding on the engine, vLLM's frontend refuses min_p and logit_bias
(``SamplingParams._validate_spec_decode``): so do we, and only then."""

from __future__ import annotations

import httpx
import pytest
import trio

from trio_front.cli import _speculative
from trio_front.flags.args_json import from_args_json

from ..api.conftest import start_server

MESSAGE = "The min_p and logit_bias sampling parameters are not yet supported with speculative decoding."


def test_the_drop_in_and_serve_learn_of_it() -> None:
    spec = {"model_tag": "m", "speculative_config": {"method": "ngram", "num_speculative_tokens": 3}}
    assert from_args_json(spec, environ={}).fields["speculative_decoding"] is True
    assert "speculative_decoding" not in from_args_json({"model_tag": "m"}, environ={}).fields
    assert _speculative(["--speculative-config", '{"method": "ngram"}'])
    assert _speculative(["--speculative_config.method=ngram"])
    assert not _speculative(["--max-num-seqs=4"])


@pytest.mark.parametrize("speculative", [True, False])
async def test_min_p_and_logit_bias(speculative: bool) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"speculative_decoding": speculative})
        async with httpx.AsyncClient(base_url=server.url) as client:
            for extra in ({"min_p": 0.1}, {"logit_bias": {"5": 1.0}}):
                chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                for path, body in (
                    ("/v1/completions", {"prompt": "hi", "max_tokens": 2}),
                    ("/v1/chat/completions", chat),
                ):
                    r = await client.post(path, json={**body, **extra})
                    if speculative:
                        assert r.status_code == 400 and r.json()["error"]["message"] == MESSAGE, r.text
                    else:
                        assert r.status_code == 200, r.text
            r = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "min_p": 0.0})
            assert r.status_code == 200, r.text  # a zero min_p is no min_p
        if speculative:
            assert len(server.adds()) == 1
        nursery.cancel_scope.cancel()
