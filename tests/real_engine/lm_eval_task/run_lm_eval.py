"""Run lm-eval-harness's ``local-completions`` model on the local ``trio_front_mc`` task against one or more
``/v1/completions`` URLs and write every per-choice result as JSON.

Executed by the lm-eval venv's interpreter (``.lmeval-venv``, see scripts/bootstrap.sh), never imported by
the test process: lm-eval and its dependencies (datasets, transformers, ...) stay out of the frontend venv.

    python run_lm_eval.py OUT.json TOKENIZER_DIR URL [URL ...]

OUT.json = ``{URL: {"requests": [...], "acc": float}}``; each request is
``{"doc_id", "choice", "arguments", "loglikelihood", "is_greedy"}`` taken from the logged samples'
``resps``/``filtered_resps``. Everything is offline: the data file sits beside the task YAML.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def evaluate(url: str, tokenizer: str, tasks: object) -> dict:
    import lm_eval

    model_args = {
        "model": "tiny",
        "base_url": url,
        "tokenizer": tokenizer,
        "tokenizer_backend": "huggingface",
        "tokenized_requests": True,
        "num_concurrent": 1,
        "max_retries": 1,
        "timeout": 60,
    }
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=model_args,
        tasks=["trio_front_mc"],
        task_manager=tasks,
        num_fewshot=0,
        batch_size=1,
        log_samples=True,
    )
    requests = []
    for sample in results["samples"]["trio_front_mc"]:
        for choice, (resp, filtered, args) in enumerate(
            zip(sample["resps"], sample["filtered_resps"], sample["arguments"], strict=True)
        ):
            loglikelihood, is_greedy = resp[0]
            if [float(x) for x in filtered] != [float(loglikelihood), float(is_greedy)]:
                raise AssertionError(f"filtered_resps {filtered} differ from resps {resp}")
            requests.append(
                {
                    "doc_id": sample["doc_id"],
                    "choice": choice,
                    "arguments": list(args),
                    "loglikelihood": float(loglikelihood),
                    "is_greedy": bool(is_greedy),
                }
            )
    return {"requests": requests, "acc": results["results"]["trio_front_mc"]["acc,none"]}


def main() -> None:
    out, tokenizer, *urls = sys.argv[1:]
    os.chdir(HERE)  # the task's data_files path is relative to this directory
    from lm_eval.tasks import TaskManager

    # Only this directory: indexing lm-eval's ~14,000 bundled task YAMLs takes a minute.
    tasks = TaskManager(include_path=str(HERE), include_defaults=False)
    json.dump({url: evaluate(url, tokenizer, tasks) for url in urls}, Path(out).open("w"), indent=1)


if __name__ == "__main__":
    main()
