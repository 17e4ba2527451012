"""lm-eval-harness, a client nobody here wrote, scores a small local multiple-choice task through
``local-completions`` (token-id prompts, ``echo=true, logprobs=1, max_tokens=1, temperature=0``) against
trio-front and against ``vllm serve`` on the same engine build: every per-choice loglikelihood must agree
within 1e-3, and so must lm-eval's greedy flag and the task accuracy.

lm-eval lives in its own venv (``.lmeval-venv``, made by scripts/bootstrap.sh from
``lm_eval_task/requirements.txt``); ``lm_eval_task/run_lm_eval.py`` runs there as a subprocess and writes the
logged samples (``resps``/``filtered_resps``) as JSON. Task and data sit in ``lm_eval_task/``: no network.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import MODEL, REPO
from .vllm_pair import Pair, shared_pair

pytestmark = pytest.mark.real_engine
TASK_DIR = Path(__file__).resolve().parent / "lm_eval_task"
LMEVAL_PYTHON = REPO / ".lmeval-venv" / "bin" / "python"
QUESTIONS = [json.loads(line) for line in (TASK_DIR / "questions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pair(request: pytest.FixtureRequest) -> Pair:
    if not LMEVAL_PYTHON.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{LMEVAL_PYTHON} missing: scripts/bootstrap.sh test installs it")
        pytest.skip("lm-eval venv not installed (scripts/bootstrap.sh test makes .lmeval-venv)")
    return shared_pair(request)


@pytest.fixture(scope="module")
def results(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """lm-eval's per-request results keyed "ours"/"theirs" (one subprocess runs both, sequentially)."""
    out = tmp_path_factory.mktemp("lm_eval") / "results.json"
    urls = {"ours": f"{pair.ours}/v1/completions", "theirs": f"{pair.theirs}/v1/completions"}
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(out.parent / "datasets"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [str(LMEVAL_PYTHON), str(TASK_DIR / "run_lm_eval.py"), str(out), str(MODEL), *urls.values()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"lm-eval failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    by_url = json.loads(out.read_text())
    return {side: by_url[url] for side, url in urls.items()}


def test_every_choice_was_scored(results: dict[str, dict]) -> None:
    expected = [(i, c) for i, q in enumerate(QUESTIONS) for c in range(len(q["choices"]))]
    for side in ("ours", "theirs"):
        got = [(r["doc_id"], r["choice"]) for r in results[side]["requests"]]
        assert got == expected, side
        # A continuation's loglikelihood is a sum of log-probabilities: negative, never the 0.0 of an
        # empty token_logprobs slice (what lm-eval computes from an answer without prompt logprobs).
        unscored = [
            (r["doc_id"], r["choice"]) for r in results[side]["requests"] if not r["loglikelihood"] < 0
        ]
        assert not unscored, f"{side}: {len(unscored)}/{len(got)} continuations scored 0.0: {unscored}"


def test_loglikelihoods_equal_vllm(results: dict[str, dict]) -> None:
    ours, theirs = results["ours"]["requests"], results["theirs"]["requests"]
    assert [r["arguments"] for r in ours] == [r["arguments"] for r in theirs]
    diffs = [
        (r["doc_id"], r["choice"], r["loglikelihood"], t["loglikelihood"])
        for r, t in zip(ours, theirs, strict=True)
        if abs(r["loglikelihood"] - t["loglikelihood"]) > 1e-3
    ]
    assert not diffs, f"{len(diffs)}/{len(ours)} loglikelihoods differ (doc, choice, ours, vllm): {diffs}"
    worst = max(abs(r["loglikelihood"] - t["loglikelihood"]) for r, t in zip(ours, theirs, strict=True))
    print(f"{len(ours)} loglikelihoods equal vLLM's, largest difference {worst:.2e}")


def test_greedy_flags_and_accuracy_equal_vllm(results: dict[str, dict]) -> None:
    ours, theirs = results["ours"], results["theirs"]
    assert [r["is_greedy"] for r in ours["requests"]] == [r["is_greedy"] for r in theirs["requests"]]
    assert ours["acc"] == pytest.approx(theirs["acc"])
