"""vLLM's tool/reasoning/structured-output flags on the command line: bad values stop start-up with a
message naming the flag (and the known parser names), before anything binds or starts."""

from __future__ import annotations

import pytest

from trio_front.cli import build_parser, main
from trio_front.server import assistant_options


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tool-call-parser", "nope"], "unknown tool call parser 'nope'; known: .*hermes.*qwen3_coder"),
        (["--reasoning-parser", "nope"], "unknown reasoning parser 'nope'; known: .*deepseek_r1.*qwen3"),
        (["--enable-auto-tool-choice"], "--enable-auto-tool-choice requires --tool-call-parser"),
        (["--structured-outputs-config", '{"backend": "outlines"}'], "not supported by trio-front"),
        (["--structured-outputs-config", "{"], "not valid JSON"),
    ],
)
def test_bad_flags_stop_start_up(flags: list[str], message: str, tmp_path) -> None:
    argv = ["run", "--engine-addr", f"ipc://{tmp_path}/never", "--model", "models/tiny-llama", *flags]
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_flags_reach_the_frontend_config() -> None:
    from trio_front.cli import _frontend_config

    args = build_parser().parse_args(
        ["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", "models/tiny-llama",
         "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder", "--reasoning-parser", "qwen3",
         "--exclude-tools-when-tool-choice-none",
         "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    )  # fmt: skip
    config = _frontend_config(args, args.engine_addr, args.model)
    assistant, structured = assistant_options(config)
    assert assistant.tool_parser_cls.__name__ == "Qwen3CoderToolParser"
    assert assistant.reasoning_parser_cls.__name__ == "Qwen3ReasoningParser"
    assert assistant.exclude_tools_when_tool_choice_none and assistant.enable_auto_tool_choice
    assert structured.wire_backend == "xgrammar" and structured.disable_any_whitespace
