"""Stop-string matching, with vLLM's semantics (``vllm/v1/engine/detokenizer.py::check_stop_strings``)."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(
    text: str, new_char_count: int, stop: Sequence[str], include_in_output: bool
) -> tuple[str, int, int] | None:
    """Search the last ``new_char_count`` characters of ``text`` for stop strings.

    A match may start up to ``len(s) - 1`` characters before the new text (it straddles the boundary) but
    must end inside it. Among matches the one that *ends* earliest wins (so several tokens appended in one
    step give the same result as one at a time); ties go to the earlier entry of ``stop``.

    Returns ``None`` or ``(stop_string, truncate_to, match_end)``: ``text[:truncate_to]`` is the output
    text to keep (it ends before the stop string, or after it with ``include_in_output``) and
    ``match_end`` is the index just past the stop string. ``text`` may be any suffix of the full output
    holding at least ``max(len(s)) - 1`` characters before the new ones; indexes are relative to it.
    """
    if not new_char_count or not stop:
        return None
    best: str | None = None
    best_start = 0
    best_end = len(text) + 1
    for stop_str in stop:
        # Negative start as in vLLM: only the new text plus len(stop_str) - 1 characters before it.
        start = text.find(stop_str, 1 - new_char_count - len(stop_str))
        if start == -1:
            continue
        end = start + len(stop_str)
        if end < best_end:
            best, best_start, best_end = stop_str, start, end
    if best is None:
        return None
    return best, (best_end if include_in_output else best_start), best_end
