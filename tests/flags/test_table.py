"""The flags table against vLLM 0.32's own ``vllm serve`` parser: every dest classified, vLLM's defaults,
and ``run``'s declarations of the honoured flags with vLLM's names and (converted) defaults."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from trio_front.cli import build_parser
from trio_front.flags.options import cli_dests
from trio_front.flags.vllm_serve import _NO_DEFAULT, EXTRA_KEYS, TABLE, Kind, counts, map_values


def test_every_vllm_dest_is_classified_and_nothing_else(vllm: dict[str, Any]) -> None:
    dests = set(vllm["dests"])
    assert len(dests) >= 300  # the dump is the real parser, not an empty one
    assert sorted(dests - set(TABLE)) == []
    assert sorted(set(TABLE) - dests) == sorted(EXTRA_KEYS)


def test_table_defaults_are_vllms(vllm: dict[str, Any]) -> None:
    wrong = {
        dest: (flag.default, vllm["dests"][dest]["default"])
        for dest, flag in TABLE.items()
        if dest in vllm["dests"]
        and flag.default is not _NO_DEFAULT
        and not vllm["dests"][dest]["suppressed"]
        and flag.default != vllm["dests"][dest]["default"]
    }
    assert wrong == {}
    # Every non-engine dest (but profiler_config's long dict) states its default.
    missing = [d for d, f in TABLE.items() if f.kind is not Kind.ENGINE and f.default is _NO_DEFAULT]
    assert missing == ["profiler_config"]


def test_vllm_defaults_are_nothing_to_report(vllm: dict[str, Any]) -> None:
    """vLLM's parser defaults, all given at once, refuse or report nothing (their JSON never holds them,
    but a hand-written one may)."""
    values = {d: info["default"] for d, info in vllm["dests"].items() if not info["suppressed"]}
    mapped = map_values(values, environ={})
    assert (mapped.refused, mapped.unknown, mapped.ignored) == ([], [], [])


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_run_declares_the_honoured_flags_with_vllms_names(vllm: dict[str, Any]) -> None:
    ours = {a.dest: a for a in _run_parser()._actions}
    for dest in cli_dests():
        assert TABLE[dest].kind is Kind.HONOURED
        assert set(vllm["dests"][dest]["options"]) <= set(ours[dest].option_strings), dest
    expected = {d for d, f in TABLE.items() if f.kind is Kind.HONOURED and d in vllm["dests"]} - {
        "model_tag",
        "model",
        "revision",
        "tokenizer_revision",
        "hf_token",
        "download_dir",
    }
    assert set(cli_dests()) == expected


@pytest.mark.parametrize("command", ["run", "serve"])
def test_our_defaults_convert_like_vllms(vllm: dict[str, Any], command: str) -> None:
    argv = [command, "--engine-addr", "tcp://127.0.0.1:1", "--model", "m"] if command == "run" else [command]
    args = build_parser().parse_args(argv)
    for dest in cli_dests():
        flag = TABLE[dest]
        assert flag.convert is not None
        ours = flag.convert(getattr(args, dest))
        theirs = flag.convert(vllm["dests"][dest]["default"])
        assert ours == theirs, dest


def test_counts() -> None:
    total = counts()
    assert sum(total.values()) == len(TABLE)
    assert all(n > 0 for n in total.values())
