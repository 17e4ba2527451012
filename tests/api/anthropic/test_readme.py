"""README "Anthropic Messages": its example runs as written (the unmodified anthropic SDK) against a
mock-engine server and ends; only the port changes (``tests/api/test_readme_examples.py``'s runner)."""

from __future__ import annotations

import trio

from ..conftest import start_server
from ..test_readme_examples import BLOCK, README, _run


def section_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index("\n## Anthropic Messages\n")
    end = text.index("\n## ", start + 1)
    return [(m[1], m[2]) for m in BLOCK.finditer(text[start:end])]


async def test_the_anthropic_example_runs_as_written() -> None:
    blocks = section_blocks()
    assert [language for language, _ in blocks] == ["python"]
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        rc, out, err = await _run(*blocks[0], server.port)
        await server.settle()
        nursery.cancel_scope.cancel()
    assert rc == 0, f"{out}\n{err}"
    lines = out.strip().splitlines()
    first = lines[0].split()
    assert first[0] in ("max_tokens", "stop_sequence", "end_turn") and int(first[1]) <= 16, out
    assert lines[-2].strip() in ("max_tokens", "stop_sequence", "end_turn"), out  # the stream's final message
    assert int(lines[-1]) > 0, out  # count_tokens
    assert not server.app.engine.open_requests and not server.mock.live_request_ids
