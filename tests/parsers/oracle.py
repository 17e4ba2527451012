"""Run vLLM 0.32's own parsers over test cases (engine venv only; invoked by harness.py).

stdin: ``{"model": <dir>, "cases": [case, ...]}``; stdout (last line): a JSON list, one answer per case.

Case shapes (extend here when a test needs another vLLM call):

* ``{"op": "tool", "parser": NAME, "text": OUT, "tools": [...]?, "tool_choice": ...?}`` →
  ``{"tools_called": bool, "content": str|None, "calls": [{"name", "arguments", "id"}]}``
  (``ToolParser.extract_tool_calls``, the non-streaming reference).
* ``{"op": "reasoning", "parser": NAME, "text": OUT, "chat_template_kwargs": {...}?}`` →
  ``{"reasoning": str|None, "content": str|None}`` (``ReasoningParser.extract_reasoning``).
* ``{"op": "reasoning_end", "parser": NAME, "ids": [...]}`` → bool (``is_reasoning_end``).
* ``{"op": "count_reasoning", "parser": NAME, "ids": [...]}`` → int (``count_reasoning_tokens``).
* ``{"op": "encode", "text": T}`` → token ids (no special tokens added).
"""

from __future__ import annotations

import json
import sys
import traceback


def main() -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.reasoning import ReasoningParserManager
    from vllm.tokenizers import get_tokenizer
    from vllm.tool_parsers import ToolParserManager

    job = json.loads(sys.stdin.read())
    tokenizer = get_tokenizer(job["model"])
    out = []
    for case in job["cases"]:
        try:
            out.append(run(case, tokenizer, ChatCompletionRequest, ToolParserManager, ReasoningParserManager))
        except Exception as exc:  # reported per case so one odd input does not hide the others
            out.append({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]})
    print(json.dumps(out))


def request(cls, case):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if case.get("tools"):
        body["tools"] = case["tools"]
        body["tool_choice"] = case.get("tool_choice", "auto")
    if case.get("chat_template_kwargs"):
        body["chat_template_kwargs"] = case["chat_template_kwargs"]
    return cls(**body)


def run(case, tokenizer, request_cls, tools_mgr, reasoning_mgr):
    op = case["op"]
    if op == "encode":
        return tokenizer.encode(case["text"], add_special_tokens=False)
    if op == "tool":
        req = request(request_cls, case)
        parser = tools_mgr.get_tool_parser(case["parser"])(tokenizer, req.tools)
        info = parser.extract_tool_calls(case["text"], req)
        return {
            "tools_called": info.tools_called,
            "content": info.content,
            "calls": [
                {"name": c.function.name, "arguments": c.function.arguments, "id": c.id}
                for c in info.tool_calls
            ],
        }
    parser_cls = reasoning_mgr.get_reasoning_parser(case["parser"])
    kwargs = (
        {"chat_template_kwargs": case["chat_template_kwargs"]} if case.get("chat_template_kwargs") else {}
    )
    parser = parser_cls(tokenizer, **kwargs)
    if op == "reasoning":
        reasoning, content = parser.extract_reasoning(case["text"], request(request_cls, case))
        return {"reasoning": reasoning, "content": content}
    if op == "reasoning_end":
        return bool(parser.is_reasoning_end(case["ids"]))
    if op == "count_reasoning":
        return int(parser.count_reasoning_tokens(case["ids"]))
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    main()
