"""Record vLLM 0.32's own text-side behaviour on the bundled tiny model into data/vllm_detok_cases.json.

Run from the repository root with the engine environment's interpreter (it imports vllm)::

    .engine-venv/bin/python tests/text/record_vllm_detok.py

It uses vLLM's classes, not re-implementations: the tokenizer from ``vllm.tokenizers.get_tokenizer``,
``OutputProcessor`` (incremental detokenizer, stop strings, holdback, token trimming, abort list) fed with
``EngineCoreOutput`` steps, and the chat path of the OpenAI server (``ChatCompletionRequest`` ->
``build_chat_params``/``build_tok_params`` -> ``HfRenderer.render_chat``). Cases are generated from a fixed
seed, so re-running gives the same file. ``tests/text/test_vllm_parity.py`` replays them against
trio_front.text without vLLM.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "tiny-llama"
OUT = Path(__file__).resolve().parent / "data" / "vllm_detok_cases.json"

EOS = 2
TEXTS = [
    "hello world",
    "héllo wörld 你好 🙂",
    "def f(x):\n    return x + 1\n",
    "Ünïcödé: naïve café, Straße, Ωmega, ½, ∑ᵢ xᵢ²",
    "emoji: 👩‍👩‍👧 🇫🇷 🙂🙃 and CJK 日本語のテキスト、中文文本。",
    "مرحبا بالعالم שלום עולם",
    "tabs\tand\nnew\r\nlines   and  spaces ",
    "STOP here. Then ### more text after the stop ###",
    "<s>special</s> in <unk> text<pad>",
    "import os\nimport sys\n\nclass A:\n    pass\n",
    "the quick brown fox jumps over the lazy dog " * 3,
    "\u00e9\u0301 combining, zero\u200bwidth, nbsp\u00a0here",
]


def encode_cases(tok: Any) -> list[dict[str, Any]]:
    texts = [*TEXTS, "", " ", "  leading", "x" * 3000, "</s>", "a</s>b<s>c", "<s><s>", "\n\n\n"]
    cases = []
    for text in texts:
        for add in (True, False):
            cases.append(
                {"text": text, "add_special_tokens": add, "ids": tok.encode(text, add_special_tokens=add)}
            )
    return cases


def decode_cases(tok: Any, rng: random.Random) -> list[dict[str, Any]]:
    cases = []
    seqs = [[*tok.encode(t), EOS] for t in TEXTS[:6]]
    seqs += [[rng.randrange(tok_len(tok)) for _ in range(rng.randint(1, 30))] for _ in range(20)]
    seqs += [[1, 2, 1, 0, 3], [], [131], [224, 176, 257]]
    for ids in seqs:
        for skip in (True, False):
            cases.append(
                {"ids": ids, "skip_special_tokens": skip, "text": tok.decode(ids, skip_special_tokens=skip)}
            )
    return cases


def tok_len(tok: Any) -> int:
    return len(tok)


# ----------------------------------------------------------------------------------------- detokenizer


def split_steps(ids: list[int], rng: random.Random, max_step: int = 1) -> list[list[int]]:
    steps = []
    i = 0
    while i < len(ids):
        n = rng.randint(1, max_step)
        steps.append(ids[i : i + n])
        i += n
    return steps


def detok_case(
    name: str,
    prompt_ids: list[int],
    steps: list[list[int]],
    *,
    finish: tuple[int, int | None] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One engine output per entry of ``steps``. ``finish``: (finish_reason, stop_reason) the engine
    reports with the last step; an ABORT (2) comes as an extra empty step, as the engine sends it."""
    steps = [list(s) for s in steps]
    if finish is not None and (finish[0] == 2 or not steps):
        steps.append([])
    return {"name": name, "prompt_ids": prompt_ids, "params": params, "steps": steps, "finish": finish}


def run_detok(tok: Any, case: dict[str, Any], index: int) -> None:
    """Feed the steps through vLLM's OutputProcessor (DELTA outputs) until the request finishes.
    ``expected``: per consumed step the delta ``text`` and ``token_ids``; then the final ``finish_reason``,
    ``stop_reason`` and whether vLLM asked to abort the request in the engine."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest, FinishReason
    from vllm.v1.engine.output_processor import OutputProcessor

    sp = SamplingParams(max_tokens=10_000, output_kind=RequestOutputKind.DELTA, **case["params"])
    processor = OutputProcessor(tok, log_stats=False)
    rid = f"r{index}"
    request = EngineCoreRequest(
        request_id=rid,
        prompt_token_ids=list(case["prompt_ids"]),
        mm_features=None,
        sampling_params=sp,
        pooling_params=None,
        arrival_time=0.0,
        lora_request=None,
        cache_salt=None,
        data_parallel_rank=None,
        external_req_id=rid,
    )
    processor.add_request(request, prompt=None)
    texts: list[str] = []
    token_ids: list[list[int]] = []
    final: dict[str, Any] = {"finish_reason": None, "stop_reason": None, "abort": False}
    steps = case["steps"]
    try:
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            finish = case["finish"] if last else None
            output = EngineCoreOutput(
                request_id=rid,
                new_token_ids=list(step),
                finish_reason=None if finish is None else FinishReason(finish[0]),
                stop_reason=None if finish is None else finish[1],
            )
            result = processor.process_outputs([output])
            (request_output,) = result.request_outputs
            (completion,) = request_output.outputs
            texts.append(completion.text)
            token_ids.append(list(completion.token_ids))
            if not processor.has_request(rid):
                final = {
                    "finish_reason": completion.finish_reason,
                    "stop_reason": completion.stop_reason,
                    "abort": rid in result.reqs_to_abort,
                }
                break
            assert completion.finish_reason is None and not result.reqs_to_abort
    except Exception as exc:  # recorded: the parity test checks that we do not crash there instead
        case["vllm_error"] = f"{type(exc).__name__}: {exc}"
    case["expected"] = {"text": texts, "token_ids": token_ids, **final}


def detok_cases(tok: Any, rng: random.Random) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    bos = [1]

    # Plain text, one token per step, for every text; with and without a prompt context.
    for i, text in enumerate(TEXTS):
        cases.append(detok_case(f"text{i}", bos, split_steps(enc(text), rng), finish=(1, None)))
        cases.append(detok_case(f"text{i}-ctx", bos + enc("context: "), split_steps(enc(text), rng, 3)))
    # Multi-byte characters split across tokens, and prompts that end inside a character.
    mb = enc("héllo wörld 你好 🙂")
    for cut in range(1, len(mb)):
        cases.append(
            detok_case(f"mb-prompt-cut{cut}", bos + mb[:cut], [[t] for t in mb[cut:]], finish=(0, None))
        )
    emoji = enc("🙂🙃👩‍👩‍👧")
    cases.append(detok_case("emoji-reverse", bos, [[t] for t in reversed(emoji)]))
    cases.append(detok_case("emoji-lone-continuations", bos, [[t] for t in emoji[1:]] + [[t] for t in emoji]))
    # Stop strings.
    stop_text = enc("STOP here. Then ### more text after the stop ###")
    for include in (False, True):
        for stops in (
            ["STOP"],
            ["###"],
            [" more", "ore"],
            ["e. Th", "Then"],
            ["not-there"],
            ["S"],
            ["stop ###"],
        ):
            for step in (1, 3):
                cases.append(
                    detok_case(
                        f"stop-{'-'.join(stops)}-inc{int(include)}-step{step}",
                        bos,
                        split_steps(stop_text, rng, step),
                        finish=(1, None),
                        stop=stops,
                        include_stop_str_in_output=include,
                    )
                )
    cases.append(detok_case("stop-multibyte", bos, [[t] for t in mb], stop=["你好"], finish=(1, None)))
    cases.append(detok_case("stop-emoji", bos, [[t] for t in mb], stop=["🙂"], finish=(1, None)))
    cases.append(
        detok_case(
            "stop-mb-prefix", bos, [[t] for t in mb], stop=["wö", "ö"], include_stop_str_in_output=True
        )
    )
    cases.append(detok_case("stop-whole-step", bos, [mb], stop=["llo", "wör"]))
    cases.append(
        detok_case("stop-in-prompt-only", bos + enc("STOP"), [[t] for t in enc(" x y")], stop=["STOP"])
    )
    cases.append(
        detok_case("stop-straddles-prompt", bos + enc("ST"), [[t] for t in enc("OP now")], stop=["STOP"])
    )
    for min_tokens in (0, 1, 2, 3, 5, 8, 20):
        for step in (1, 2, 4):
            cases.append(
                detok_case(
                    f"min_tokens{min_tokens}-step{step}",
                    bos,
                    split_steps(enc("ab ab ab ab ab ab ab ab"), rng, step),
                    finish=(1, None),
                    stop=["ab"],
                    min_tokens=min_tokens,
                )
            )
    # Engine STOP: EOS / a stop token id as the last token is not detokenized unless include_stop_str.
    for include in (False, True):
        for skip in (True, False):
            cases.append(
                detok_case(
                    f"eos-inc{int(include)}-skip{int(skip)}",
                    bos,
                    [[t] for t in enc("done")] + [[EOS]],
                    finish=(0, None),
                    include_stop_str_in_output=include,
                    skip_special_tokens=skip,
                )
            )
            cases.append(
                detok_case(
                    f"stoptoken-inc{int(include)}-skip{int(skip)}",
                    bos,
                    [[t] for t in enc("abc")] + [enc(" xyz")],
                    finish=(0, enc(" xyz")[-1]),
                    include_stop_str_in_output=include,
                    skip_special_tokens=skip,
                    stop_token_ids=[enc(" xyz")[-1]],
                )
            )
            cases.append(
                detok_case(
                    f"eos-with-stopstr-inc{int(include)}-skip{int(skip)}",
                    bos,
                    [[t] for t in enc("one two ")] + [[enc("three")[0], EOS]],
                    finish=(0, None),
                    stop=["two", "xx"],
                    include_stop_str_in_output=include,
                    skip_special_tokens=skip,
                )
            )
    cases.append(detok_case("eos-only", bos, [[EOS]], finish=(0, None)))
    cases.append(
        detok_case(
            "abort-flushes-holdback", bos, [[t] for t in enc("abcdef")], finish=(2, None), stop=["xyzw"]
        )
    )
    cases.append(detok_case("empty-steps", bos, [[], enc("ab"), [], enc("cd")], stop=["bc"]))
    cases.append(detok_case("no-prompt-context", [], [[t] for t in enc(" hello world")]))
    # Special tokens with skip_special_tokens / spaces_between_special_tokens.
    specials = [[1], [2], [2], [t for t in enc(" a")], [0], [3], [3], [1], enc("b"), [2]]
    for skip in (True, False):
        for spaces in (True, False):
            cases.append(
                detok_case(
                    f"specials-skip{int(skip)}-spaces{int(spaces)}",
                    bos,
                    specials,
                    skip_special_tokens=skip,
                    spaces_between_special_tokens=spaces,
                )
            )
    cases.append(
        detok_case("detokenize-false", bos, [[t] for t in enc("abc")], finish=(1, None), detokenize=False)
    )
    # Random token soup (all ids, specials included), random step sizes and params.
    vocab = tok_len(tok)
    for i in range(120):
        prompt = bos + [rng.randrange(vocab) for _ in range(rng.randint(0, 12))]
        ids = [
            rng.randrange(vocab) if rng.random() < 0.5 else rng.choice(mb + stop_text)
            for _ in range(rng.randint(1, 40))
        ]
        if rng.random() < 0.2:
            ids = [rng.choice([0, 1, 2, 3]) if rng.random() < 0.3 else t for t in ids]
        text = tok.decode(ids)
        params: dict[str, Any] = {
            "skip_special_tokens": rng.random() < 0.7,
            "spaces_between_special_tokens": rng.random() < 0.5,
        }
        if text.strip() and rng.random() < 0.7:
            stops = []
            for _ in range(rng.randint(1, 3)):
                a = rng.randrange(len(text))
                stops.append(text[a : a + rng.randint(1, 4)] or "z")
            params.update(
                stop=stops,
                include_stop_str_in_output=rng.random() < 0.3,
                min_tokens=rng.choice([0, 0, 1, 3, 10]),
            )
        finish = rng.choice([None, (0, None), (1, None), (2, None)])
        if finish == (0, None):
            ids.append(EOS)
        cases.append(
            detok_case(
                f"random{i}", prompt, split_steps(ids, rng, rng.choice([1, 1, 2, 4])), finish=finish, **params
            )
        )
    return cases


# ----------------------------------------------------------------------------------------- chat


OPENAI_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}]"
    "{% for part in m.content %}{{ part.type }}:{{ part.text }};{% endfor %}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS={{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}"
    "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}"
    "{% if m.reasoning_content %}(r={{ m.reasoning_content }}){% endif %}\n{% endfor %}"
    "{% if documents %}DOCS={{ documents | tojson }}{% endif %}"
    "effort={{ reasoning_effort }} think={{ enable_thinking }} x={{ custom_var }}"
    "{% if add_generation_prompt %}\nassistant:{% endif %}"
)
STRICT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ raise_exception('first message must be system') }}{% endif %}"
    "{% for m in messages %}{{ m['content'] }}|{% endfor %}"
)
TRIM_TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>\n{% endfor %}"


def chat_requests() -> list[dict[str, Any]]:
    user = {"role": "user", "content": "Hello there"}
    sysm = {"role": "system", "content": "You are terse."}
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}],
    }
    call = {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Paris"}'}}
    bad_call = {"id": "call_2", "type": "function", "function": {"name": "get", "arguments": "{nope"}}
    tool = {
        "type": "function",
        "function": {"name": "get", "description": "Get weather", "parameters": {"type": "object"}},
    }
    return [
        {"messages": [user]},
        {"messages": [sysm, user]},
        {"messages": [sysm, user], "add_generation_prompt": False},
        {"messages": [sysm, user], "add_special_tokens": True},
        {"messages": [parts]},
        {"messages": [{"role": "user", "content": []}]},
        {"messages": [{"role": "user", "content": "héllo 你好 🙂 <s></s>"}]},
        {
            "messages": [user, {"role": "assistant", "content": "Sure, "}],
            "add_generation_prompt": False,
            "continue_final_message": True,
        },
        {"messages": [user, {"role": "assistant", "content": "Sure, "}], "continue_final_message": True},
        {
            "messages": [user, {"role": "assistant", "content": "Sure,  "}],
            "add_generation_prompt": False,
            "continue_final_message": True,
            "chat_template": TRIM_TEMPLATE,
        },
        {
            "messages": [parts, {"role": "assistant", "content": [{"type": "text", "text": "I "}]}],
            "add_generation_prompt": False,
            "continue_final_message": True,
            "chat_template": OPENAI_TEMPLATE,
        },
        {"messages": [sysm, parts, {"role": "assistant", "content": "ok"}], "chat_template": OPENAI_TEMPLATE},
        {
            "messages": [{"role": "developer", "content": "dev rules"}, sysm, user],
            "chat_template": TOOLS_TEMPLATE,
        },
        {
            "messages": [
                user,
                {"role": "assistant", "content": None, "tool_calls": [call, bad_call]},
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
            ],
            "chat_template": TOOLS_TEMPLATE,
            "tools": [tool],
        },
        {
            "messages": [user, {"role": "assistant", "content": "x", "reasoning": "thought"}],
            "chat_template": TOOLS_TEMPLATE,
            "reasoning_effort": "low",
            "chat_template_kwargs": {"custom_var": 7, "enable_thinking": False},
        },
        {
            "messages": [user],
            "chat_template": TOOLS_TEMPLATE,
            "reasoning_effort": "none",
            "chat_template_kwargs": {"custom_var": "auto", "add_generation_prompt": False},
        },
        {"messages": [user], "chat_template": TOOLS_TEMPLATE, "documents": [{"title": "T", "text": "body"}]},
        {"messages": [user], "chat_template": STRICT_TEMPLATE},
        {"messages": [sysm, user], "chat_template": STRICT_TEMPLATE},
        {"messages": [user], "chat_template": "{{ messages.append(1) }}"},
        {"messages": [user], "chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"},
        {
            "messages": [user],
            "chat_template": "{% generation %}{{ messages[0].content }}{% endgeneration %}"
            "{{ 'x<y>' | tojson }}",
        },
        {
            "messages": [
                {"role": "user", "content": [{"text": "t", "type": "text", "cache_control": {"type": "x"}}]},
                {
                    "role": "assistant",
                    "content": "c",
                    "extra": 1,
                    "tool_calls": [
                        {
                            "type": "function",
                            "index": 0,
                            "function": {"name": "f", "arguments": "[1]"},
                            "id": "a",
                        }
                    ],
                },
            ],
            "chat_template": TOOLS_TEMPLATE,
            "tools": [
                {
                    "function": {
                        "parameters": {"b": 1, "a": 2},
                        "name": "g",
                        "description": "d",
                        "strict": True,
                    }
                },
                {"type": "function", "function": {"name": "f"}},
            ],
        },
        {
            "messages": [
                {"role": "user", "content": [{"text": "t", "type": "text", "cache_control": {"type": "x"}}]}
            ],
            "chat_template": OPENAI_TEMPLATE.replace("{{ part.text }}", "{{ part | tojson }}"),
        },
    ]


def run_chat(renderer: Any, model_config: Any, body: dict[str, Any]) -> dict[str, Any]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    record: dict[str, Any] = {"request": body}
    try:
        request = ChatCompletionRequest(model="tiny", **body)
        tool_dicts = None if request.tools is None else [t.model_dump() for t in request.tools]
        record["tool_dicts"] = tool_dicts
        chat_params = request.build_chat_params(None, "auto").with_defaults(
            {"tools": tool_dicts, "tokenize": False}
        )
        tok_params = request.build_tok_params(model_config)
        (conversation,), (engine_input,) = renderer.render_chat([request.messages], chat_params, tok_params)
        record.update(
            prompt=engine_input["prompt"],
            prompt_token_ids=list(engine_input["prompt_token_ids"]),
            conversation=json.loads(json.dumps(conversation, default=str)),
        )
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    return record


def main() -> None:
    logging.disable(logging.WARNING)
    import tokenizers
    import transformers
    import vllm
    from vllm.engine.arg_utils import EngineArgs
    from vllm.renderers.registry import renderer_from_config
    from vllm.tokenizers import get_tokenizer

    rng = random.Random(20261128)
    tok = get_tokenizer(str(MODEL))
    config = EngineArgs(model=str(MODEL), max_model_len=4096).create_engine_config()
    renderer = renderer_from_config(config)
    cases = detok_cases(tok, rng)
    for i, case in enumerate(cases):
        run_detok(tok, case, i)
    data = {
        "versions": {
            "vllm": vllm.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "model": "models/tiny-llama",
        "encode": encode_cases(tok),
        "decode": decode_cases(tok, rng),
        "detok": cases,
        "chat": [run_chat(renderer, config.model_config, body) for body in chat_requests()],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One case per line: reviewable diffs without a multi-megabyte indented file.
    lines = ["{"]
    for i, (key, value) in enumerate(data.items()):
        comma = "," if i < len(data) - 1 else ""
        if isinstance(value, list):
            items = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    errors = sum("vllm_error" in c for c in cases)
    print(f"wrote {OUT} ({len(cases)} detok cases, {errors} vLLM errors)", file=sys.stderr)


if __name__ == "__main__":
    main()
