"""README "Calling it": every code block there runs as written against a mock-engine server and ends.

The blocks are read from README.md itself (so the README cannot drift from what works); the only change is
the port: ``localhost:8000`` becomes the test server's. Shell blocks run in bash (curl), Python blocks in
this interpreter (the unmodified ``openai`` SDK), each in its own process with a time limit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from .conftest import start_server

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def calling_it_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the "## Calling it" section, in order."""
    text = README.read_text()
    start = text.index("\n## Calling it\n")
    end = text.index("\n## ", start + 1)
    return [(m[1], m[2]) for m in BLOCK.finditer(text[start:end])]


def test_the_section_has_the_examples_we_run() -> None:
    languages = [language for language, _ in calling_it_blocks()]
    assert languages == ["bash", "python", "python"], languages
    code = "".join(code for _, code in calling_it_blocks())
    assert "..." not in code  # complete, nothing left to the reader


async def _run(language: str, code: str, port: int) -> tuple[int, str, str]:
    code = code.replace("localhost:8000", f"localhost:{port}")  # the port, nothing else
    argv = ["bash", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    with trio.fail_after(90):  # a blocking loop that never ends would fail here, not hang CI
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


async def test_calling_it_examples_run_as_written_and_end() -> None:
    blocks = calling_it_blocks()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        results = [await _run(language, code, server.port) for language, code in blocks]
        await server.settle()
        nursery.cancel_scope.cancel()
    for (language, _), (rc, out, err) in zip(blocks, results, strict=True):
        assert rc == 0, f"{language} block failed ({rc}):\n{out}\n{err}"
    (_, curl_out, _), (_, sdk_out, _), (_, ws_out, _) = results
    assert '"object":"text_completion"' in curl_out.replace(" ", ""), curl_out
    assert curl_out.rstrip().endswith("data: [DONE]"), curl_out
    assert sdk_out.strip(), sdk_out
    # Both WebSocket examples end at their token limit (the mock never ends on its own here).
    assert ws_out.count("[incomplete]") == 2, ws_out
    assert not server.app.engine.open_requests and not server.mock.live_request_ids
