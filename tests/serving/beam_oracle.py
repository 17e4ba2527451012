"""vLLM 0.32's own beam search over a fake engine (engine venv only; run by ``test_beam_search.py``).

The fake "model" (:func:`fake_answer`) is pure Python and imported by both sides, so the test drives
trio-front's :class:`~trio_front.serving.beam_search.BeamSearch` and vLLM's
``BeamSearchOnlineMixin.beam_search`` with the very same answers and compares every output field and the
pattern of engine requests (how many per step, their prompts and sampling parameters).

stdin: ``{"cases": [...], "scores": [...]}``; stdout (last line): ``{"cases": [...], "scores": [...]}``.

* case ``{"prompt": [ids], "beam_width", "max_tokens", "ignore_eos", "length_penalty",
  "include_stop_str_in_output", "skip_special_tokens", "temperature", "eos", "eos_rate", "seed"}`` →
  ``{"outputs": [{"text", "token_ids", "cumulative_logprob", "logprobs": [[[id, lp], ...], ...],
  "finish_reason", "stop_reason"}], "steps": [[prompt, ...], ...], "params": {...}}``
* score ``[tokens, cum_logprob, eos, length_penalty]`` → ``get_beam_search_score(...)``
"""

from __future__ import annotations

import json
import random
import sys

#: Ids of the fake vocabulary; ``SPECIAL`` ids are dropped by ``skip_special_tokens``.
VOCAB = range(3, 60)
SPECIAL = frozenset({0, 1, 2, 3})


def fake_answer(
    tokens: list[int], k: int, *, eos: int, eos_rate: float, seed: int
) -> list[tuple[int, float]]:
    """One step's logprobs row for a beam whose sequence is *tokens*: the sampled token then the top *k*
    (what the engine's logprobs look like: the sampled token may be the best one or another)."""
    rng = random.Random(seed * 1_000_003 + sum((i + 1) * t for i, t in enumerate(tokens)))
    ids = rng.sample(list(VOCAB), k)
    if rng.random() < eos_rate:
        ids[rng.randrange(k)] = eos
    # Distinct values on a coarse grid keep sums comparable; a tie is unlikely but harmless either way.
    values = sorted((-round(rng.uniform(0.01, 6.0), 4) for _ in range(k)), reverse=True)
    if rng.random() < 0.3:  # sampled outside the top-k (temperature sampling)
        sampled = rng.choice([t for t in VOCAB if t not in ids])
        sampled_lp = values[-1] - round(rng.uniform(0.01, 2.0), 4)
    else:
        sampled, sampled_lp = ids[0], values[0]
    return [(sampled, sampled_lp), *zip(ids, values, strict=True)]


def fake_decode(ids: list[int], skip_special_tokens: bool = True) -> str:
    return "".join(f"<{t}>" for t in ids if not (skip_special_tokens and t in SPECIAL))


def main() -> None:
    import asyncio

    from vllm import CompletionOutput, RequestOutput
    from vllm.entrypoints.generate.beam_search.online import BeamSearchOnlineMixin
    from vllm.entrypoints.generate.beam_search.utils import get_beam_search_score
    from vllm.inputs import tokens_input
    from vllm.logprobs import Logprob
    from vllm.sampling_params import BeamSearchParams

    job = json.loads(sys.stdin.read())

    class Tokenizer:
        def __init__(self, eos: int) -> None:
            self.eos_token_id = eos

        def decode(self, ids, skip_special_tokens=True):
            return fake_decode(list(ids), skip_special_tokens)

    class Renderer:
        def __init__(self, eos: int) -> None:
            self.tok = Tokenizer(eos)

        def get_tokenizer(self):
            return self.tok

    class InputProcessor:
        def resolve_watermarking(self, params) -> None:
            pass

    class Engine:
        def __init__(self, case) -> None:
            self.case = case
            self.input_processor = InputProcessor()
            self.steps: list[list[list[int]]] = []
            self.params = None
            self.batch = None

        async def generate(self, prompt, sampling_params, request_id, **_):
            batch = request_id.rsplit("-beam-", 1)[0]
            if batch != self.batch:
                self.batch = batch
                self.steps.append([])
            ids = list(prompt["prompt_token_ids"])
            self.steps[-1].append(ids)
            self.params = sampling_params
            c = self.case
            row = fake_answer(
                ids, sampling_params.logprobs, eos=c["eos"], eos_rate=c["eos_rate"], seed=c["seed"]
            )
            logprobs = {}
            for rank, (tid, lp) in enumerate(row):
                logprobs[tid] = Logprob(logprob=lp, rank=rank or 1, decoded_token=None)
            yield RequestOutput(
                request_id=request_id,
                prompt=None,
                prompt_token_ids=ids,
                prompt_logprobs=None,
                outputs=[
                    CompletionOutput(
                        index=0,
                        text="",
                        token_ids=[row[0][0]],
                        cumulative_logprob=row[0][1],
                        logprobs=[logprobs],
                        finish_reason="length",
                    )
                ],
                finished=True,
            )

    class Server(BeamSearchOnlineMixin):
        def __init__(self, case) -> None:
            self.engine_client = Engine(case)
            self.renderer = Renderer(case["eos"])

    async def run(case):
        server = Server(case)
        params = BeamSearchParams(
            beam_width=case["beam_width"],
            max_tokens=case["max_tokens"],
            ignore_eos=case["ignore_eos"],
            temperature=case["temperature"],
            length_penalty=case["length_penalty"],
            include_stop_str_in_output=case["include_stop_str_in_output"],
            skip_special_tokens=case["skip_special_tokens"],
        )
        final = None
        async for out in server.beam_search(tokens_input(case["prompt"]), "req", params):
            final = out
        p = server.engine_client.params
        return {
            "outputs": [
                {
                    "text": o.text,
                    "token_ids": list(o.token_ids),
                    "cumulative_logprob": o.cumulative_logprob,
                    "logprobs": [[[tid, lp.logprob] for tid, lp in step.items()] for step in o.logprobs],
                    "finish_reason": o.finish_reason,
                    "stop_reason": o.stop_reason,
                }
                for o in final.outputs
            ],
            "steps": server.engine_client.steps,
            "params": {
                "logprobs": p.logprobs,
                "max_tokens": p.max_tokens,
                "temperature": p.temperature,
                "n": p.n,
            },
        }

    cases = [asyncio.run(run(case)) for case in job["cases"]]
    scores = [get_beam_search_score(t, c, e, lp) for t, c, e, lp in job["scores"]]
    print(json.dumps({"cases": cases, "scores": scores}))


if __name__ == "__main__":
    main()
