"""Mistral tool calls (``mistral``) as vLLM 0.32 parses them with a Hugging Face tokenizer.

Two formats follow the ``[TOOL_CALLS]`` special token; vLLM picks one by the vocabulary (``[ARGS]``
in it: the v11+ format), we pick by what follows the marker (a ``[`` or ``{``: the old one):

* pre-v11: ``text[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]`` (or one bare object). The
  first JSON value after the marker is decoded (trailing output and later markers are ignored); entries
  that are objects with a ``name`` or ``arguments`` are calls (a non-string name becomes ``""``, string
  arguments are kept as they are, others ``json.dumps(..., ensure_ascii=False)``, missing ``"{}"``).
  No call found: the content is the stripped text after the marker. ``content`` is the text before the
  marker, or ``None`` if that is only whitespace.
* v11+: ``text[TOOL_CALLS]f[ARGS]{...}[TOOL_CALLS]g{...}``: each marker starts a call; the name is the
  stripped text up to ``[ARGS]`` or ``{`` (an empty name is kept, as vLLM does); the arguments are the
  first JSON value of the stripped rest *as written* (not re-serialised), the stripped rest itself if it
  is not JSON, ``"{}"`` if empty; text after the value is dropped. ``content`` (text before the first
  marker) is stripped.

Streaming: content before the marker is passed on, except a trailing whitespace run, held until we know
whether a marker follows. A call is emitted once its JSON value closes (or at the next marker / end).

Deliberate deviations (streamed text cannot be taken back):

* v11+ content keeps its leading whitespace (vLLM strips it), and a pre-v11 failure keeps the text
  before the marker (vLLM's content is then only the text after it);
* ``[TOOL_CALLS]`` followed only by whitespace is no call (v11+ vLLM: a call named ``""``; pre-v11: content
  ``""``);
* either format is understood whatever the vocabulary (vLLM reads the other one as garbage);
  consequently ``[TOOL_CALLS] text [{...}]`` (prose before a pre-v11 list, which vLLM's fallback
  regex still finds) is read as a v11 call named ``text [``.

Not here: vLLM's pre-v11 path also parses a bare JSON array without the marker when ``tool_choice`` is
``required`` or a named function (its guided-decoding output); the parser does not see ``tool_choice``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .base import Content, ToolCall, ToolEvent, ToolParser
from .llama_json import JsonSpan, partial_hold

BOT = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_FALLBACK = re.compile(r"\[{.*}\]", re.DOTALL)  # vLLM's pre-v11 second try
_TRAILING_SPACE = re.compile(r"\s*\Z")
_FIRST = re.compile(r"(?:\s|\[TOOL_CALLS\])*")
_NONSPACE = re.compile(r"\S")


def pre_v11_calls(parsed: Any) -> list[ToolCall]:
    """vLLM's ``_pre_v11_function_calls``."""
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list):
        return []
    calls = []
    for item in parsed:
        if not isinstance(item, dict) or ("name" not in item and "arguments" not in item):
            continue
        name, args = item.get("name"), item.get("arguments")
        if args is None:
            args = "{}"
        elif not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        calls.append(ToolCall(name if isinstance(name, str) else "", args))
    return calls


def pre_v11_segment(segment: str) -> tuple[list[ToolCall], str]:
    """The calls in the (whole) text after the marker, and the content if there are none."""
    stripped = segment.strip()
    try:
        parsed, _ = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        m = _FALLBACK.search(stripped)
        try:
            parsed = json.loads(m.group()) if m else None
        except json.JSONDecodeError:
            parsed = None
    return pre_v11_calls(parsed), stripped


def v11_args(raw: str) -> str:
    """vLLM's ``_extract_args_json``: the first JSON value as written, else the stripped text."""
    stripped = raw.strip()
    if not stripped:
        return "{}"
    try:
        _, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return stripped
    return stripped[:end]


def _separator(segment: str) -> tuple[int, int] | None:
    """(name end, arguments start) in a v11 call segment, if the separator has arrived."""
    a, b = segment.find(ARGS), segment.find("{")
    if b >= 0 and (a < 0 or b < a):
        return b, b  # the brace belongs to the arguments
    return (a, a + len(ARGS)) if a >= 0 else None


class MistralToolParser(ToolParser):
    needs_special_tokens = True  # vLLM keeps special tokens so [TOOL_CALLS] survives decoding

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(tools)
        self._buf = ""
        # text: before the marker; sniff: after it, format unknown yet; pre: pre-v11 JSON after it;
        # v11: inside a v11 call segment; done: pre-v11 calls emitted, the rest is ignored.
        self._state: Literal["text", "sniff", "pre", "v11", "done"] = "text"
        self._spoke = False  # non-whitespace content was emitted before the marker
        self._held_space = ""  # whitespace before the marker: content or dropped, by format
        self._span: JsonSpan | None = None
        self._failed = False  # the JSON value closed but decided nothing: wait for the end
        self._emitted = False  # the current v11 call was emitted early
        self._name = ""  # the current v11 call's name, once its separator arrived

    def feed(self, text: str) -> list[ToolEvent]:
        self._buf += text
        out: list[ToolEvent] = []
        getattr(self, f"_feed_{self._state}")(out)
        return out

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        if self._state == "text":
            self._content(out, self._buf)
        elif self._state == "sniff":
            lead = _FIRST.match(self._buf)
            self._buf = self._buf[lead.end() if lead else 0 :]
            if self._buf:  # a lone "[" that was not a marker after all
                self._state = "pre"
            else:
                self._content(out, self._held_space if self._spoke else "")
        if self._state == "pre":
            calls, stripped = pre_v11_segment(self._segment(self._buf))
            self._content(out, self._held_space if self._spoke else "")
            if calls:
                out.extend(calls)
            else:
                self._content(out, stripped)
        if self._state == "v11":
            self._end_v11(out, self._buf)
        self._buf = ""
        self._state = "done"
        return out

    # -----------------------------------------------------------------------------------------------

    def _content(self, out: list[ToolEvent], text: str) -> None:
        if text:
            out.append(Content(text))

    def _feed_text(self, out: list[ToolEvent]) -> None:
        i = self._buf.find(BOT)
        end = i if i >= 0 else len(self._buf) - partial_hold(self._buf, BOT)
        cut = end
        if end and self._buf[end - 1].isspace():
            space = _TRAILING_SPACE.search(self._buf, 0, end)
            cut = space.start() if space else end
        if cut:
            self._content(out, self._buf[:cut])
            self._spoke = True
        if i < 0:
            self._buf = self._buf[cut:]
            return
        self._held_space = self._buf[cut:i]
        self._buf = self._buf[i + len(BOT) :]
        self._state = "sniff"
        self._feed_sniff(out)

    def _feed_sniff(self, out: list[ToolEvent]) -> None:
        lead = _FIRST.match(self._buf)
        k = lead.end() if lead else 0
        if k == len(self._buf) or (self._buf[k] == "[" and BOT.startswith(self._buf[k:])):
            return  # only whitespace / markers (or a partial one) so far
        if self._buf[k] in "[{":
            self._content(out, self._held_space if self._spoke else "")
            self._held_space = ""
            self._buf = self._buf[k:]
            self._state = "pre"
            self._span = JsonSpan()
            self._feed_pre(out)
        else:
            self._state = "v11"  # v11 content is stripped: the held whitespace goes
            self._new_call()
            self._feed_v11(out)

    def _segment(self, text: str) -> str:
        i = text.find(BOT)
        return text if i < 0 else text[:i]

    def _feed_pre(self, out: list[ToolEvent]) -> None:
        if self._failed or self._span is None:
            return
        seg = self._segment(self._buf)  # a marker inside the value cuts it, as vLLM's split does
        end = self._span.end(seg)
        if end is None:
            return
        try:
            calls = pre_v11_calls(json.loads(seg[:end]))
        except ValueError:
            calls = []
        if not calls:
            self._failed = True  # content or the fallback: decided by the whole text, at the end
            return
        out.extend(calls)
        self._buf = ""
        self._state = "done"

    def _feed_done(self, out: list[ToolEvent]) -> None:
        self._buf = ""

    def _new_call(self) -> None:
        self._span, self._emitted, self._failed = None, False, False

    def _feed_v11(self, out: list[ToolEvent]) -> None:
        while True:
            i = self._buf.find(BOT)
            seg = self._buf if i < 0 else self._buf[:i]
            if i >= 0:
                self._end_v11(out, seg)
                self._buf = self._buf[i + len(BOT) :]
                self._new_call()
                continue
            if not (self._emitted or self._failed):
                self._early_v11(out, seg)
            if self._emitted:  # the rest of the segment is dropped: keep only a partial marker
                self._buf = self._buf[len(self._buf) - partial_hold(self._buf, BOT) :]
            return

    def _early_v11(self, out: list[ToolEvent], seg: str) -> None:
        if self._span is None:
            sep = _separator(seg)
            if sep is None:
                return
            value = _NONSPACE.search(seg, sep[1])
            if value is None:
                return
            if value.group() not in "[{":
                self._failed = True  # a scalar or prose: decided at the segment's end
                return
            self._name = seg[: sep[0]].strip()
            self._span = JsonSpan(value.start())
        end = self._span.end(seg)
        if end is None:
            return
        args = seg[self._span.start : end]
        try:
            json.loads(args)
        except ValueError:
            self._failed = True
            return
        out.append(ToolCall(self._name, args))
        self._emitted = True

    def _end_v11(self, out: list[ToolEvent], seg: str) -> None:
        if self._emitted or not seg:  # a marker with nothing after it is no call, as in vLLM
            return
        sep = _separator(seg)
        if sep is None:
            if seg.strip():
                out.append(ToolCall(seg.strip(), "{}"))
            return
        out.append(ToolCall(seg[: sep[0]].strip(), v11_args(seg[sep[1] :])))
