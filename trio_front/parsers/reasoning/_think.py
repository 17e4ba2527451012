"""A marker-driven reasoning splitter shared by the ``<think>``-style families (no I/O).

A family is described by a :class:`Grammar`: two states (reasoning, content), the marker strings that
matter in each state and what each does there (drop it and stay; switch state and drop it; switch to
content and keep it as content text, as a tool-call opener that implicitly ends reasoning does). Any
other text belongs to the current state. This is the part of vLLM 0.32's parser engine
(``vllm/parser/engine``) that decides reasoning vs content when ``extract_reasoning`` runs with tool
parsing skipped, plus the legacy ``BaseThinkingReasoningParser`` shape for deepseek_r1.

Streaming: text that may still become a marker is held back; with ``rstrip_reasoning`` (vLLM strips
the trailing whitespace of the *joined* reasoning) reasoning whitespace is held until non-blank
reasoning follows and dropped at :meth:`finish`. Either way any chunking merges to :meth:`parse`.

Token ids: :meth:`start` and :meth:`count_reasoning_tokens` run the same grammar over token ids, with
each marker resolved by ``tokenizer.token_to_id`` (a marker that is not one token is not seen there,
as in vLLM, which looks the markers up in the vocabulary).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from trio_front.text.tokenizer import Tokenizer

from .base import Content, Reasoning, ReasoningEvent, ReasoningParser


class State(enum.Enum):
    REASONING = "reasoning"
    CONTENT = "content"


@attrs.frozen
class Rule:
    """What a marker does in a state: go to ``to`` (maybe the same state); ``keep``: the marker text
    itself is emitted in the new state (only for a switch to content)."""

    to: State
    keep: bool = False
    #: Applies to the first occurrence only (deepseek_r1 partitions on the first marker).
    once: bool = False


@attrs.frozen
class Grammar:
    initial: State
    rules: Mapping[tuple[State, str], Rule]
    #: Strings removed wherever they occur (vLLM's engine drops special tokens it has no rule for).
    drop: frozenset[str] = frozenset()
    rstrip_reasoning: bool = False
    #: Markers whose token id, scanning the prompt backwards, means "stop looking" (a turn boundary).
    boundaries: frozenset[str] = frozenset()


class MarkerReasoningParser(ReasoningParser):
    """Base class: subclasses build their :class:`Grammar` in :meth:`grammar` and may override
    :meth:`reasoning_end_in` (vLLM's ``is_reasoning_end``) and :meth:`parse` (empty-side conventions)."""

    def __init__(self, tokenizer: Tokenizer, chat_template_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(tokenizer, chat_template_kwargs)
        self.g = self.grammar()
        #: Everything is content, markers included (thinking disabled, or the prompt closed reasoning).
        self.passthrough = self.thinking_disabled()
        self._state = self.g.initial
        self._held = ""
        self._pending_ws = ""
        self._ended_in_prompt = self.reasoning_end_in(())
        #: set by start() while deciding whether the output opens reasoning of its own
        self._openers: list[str] | None = None
        self._sniffed = ""
        by_state: dict[State, list[str]] = {State.REASONING: [], State.CONTENT: []}
        for state, marker in self.g.rules:
            by_state[state].append(marker)
        # Per state, the markers still live there (a once-rule's marker leaves after its first use) and
        # their first characters: a delta with none of those and nothing held is plain text.
        self._markers = {s: list(dict.fromkeys([*m, *self.g.drop])) for s, m in by_state.items()}
        self._firsts = {s: frozenset(m[0] for m in ms) for s, ms in self._markers.items()}

    # -- family hooks ---------------------------------------------------------------------------------

    def grammar(self) -> Grammar:
        raise NotImplementedError

    def thinking_disabled(self) -> bool:
        """The request turned thinking off (``chat_template_kwargs``): vLLM returns the whole output as
        content, untouched."""
        return False

    def reasoning_end_in(self, ids: Sequence[int]) -> bool:
        """vLLM's ``is_reasoning_end(ids)``."""
        raise NotImplementedError

    # -- the contract ---------------------------------------------------------------------------------

    def parse(self, text: str) -> tuple[str | None, str | None]:
        if self.passthrough and self.thinking_disabled():
            return None, text  # vLLM returns the output verbatim, even when it is empty
        return super().parse(text)

    def start(self, prompt_ids: Sequence[int]) -> None:
        self._ended_in_prompt = self.reasoning_end_in(prompt_ids)
        if self._ended_in_prompt and not self.passthrough:
            # vLLM's streaming path then takes the whole output as content; its non-streaming path
            # ignores the prompt. Neither is right alone: the prompt's "ended" is often an earlier
            # turn's </think> (vLLM scans back across turns), so an output that opens its own
            # reasoning block is parsed as usual, and anything else is content.
            openers = [m for (st, m), r in self.g.rules.items() if st is State.REASONING and r.to is st]
            if self.g.initial is State.REASONING and openers:
                self._openers = openers
                self._sniffed = ""
            else:
                self.passthrough = True

    def reasoning_ended_in_prompt(self) -> bool:
        return self._ended_in_prompt

    def feed(self, text: str) -> list[ReasoningEvent]:
        if self._openers is not None:
            return self._sniff(text)
        if self.passthrough:
            return [Content(text)] if text else []
        out: list[ReasoningEvent] = []
        if not self._held and self._firsts[self._state].isdisjoint(text):
            self._emit(out, text)
            return out
        buf = self._held + text
        pos = 0
        while True:
            hit = self._next_marker(buf, pos)
            if hit is None:
                break
            at, marker = hit
            self._emit(out, buf[pos:at])
            self._apply(out, marker)
            pos = at + len(marker)
        rest = buf[pos:]
        hold = _hold_len(rest, self._markers[self._state])
        self._held = rest[len(rest) - hold :] if hold else ""
        self._emit(out, rest[: len(rest) - hold])
        return out

    def _sniff(self, text: str) -> list[ReasoningEvent]:
        """After a prompt that ended reasoning: does the output open a reasoning block of its own?"""
        assert self._openers is not None
        self._sniffed += text
        head = self._sniffed.lstrip()
        if not head or any(len(head) < len(m) and m.startswith(head) for m in self._openers):
            return []  # undecided: blank so far, or the start of an opener
        openers, buf = self._openers, self._sniffed
        self._openers, self._sniffed = None, ""
        if not any(head.startswith(m) for m in openers):
            self.passthrough = True
        return self.feed(buf)

    def finish(self) -> list[ReasoningEvent]:
        if self._openers is not None:  # the output ended undecided: it was content
            buf, self._openers, self._sniffed = self._sniffed, None, ""
            self.passthrough = True
            return [Content(buf)] if buf else []
        if self.passthrough:
            return []
        out: list[ReasoningEvent] = []
        self._emit(out, self._held)
        self._held = ""
        self._pending_ws = ""  # trailing reasoning whitespace: stripped, as vLLM does
        return out

    def count_reasoning_tokens(self, output_ids: Sequence[int]) -> int:
        if self.passthrough:
            return 0
        ids = self._marker_ids()
        drop = {i for m in self.g.drop if (i := self.tokenizer.token_to_id(m)) is not None}
        state, used, count = self.g.initial, set[tuple[State, str]](), 0
        for token in output_ids:
            marker = ids.get(token)
            rule = self.g.rules.get((state, marker)) if marker is not None else None
            if rule is not None and (state, marker) not in used:
                if rule.once:
                    used.add((state, marker))  # type: ignore[arg-type]
                state = rule.to
            elif token not in drop and state is State.REASONING:
                count += 1
        return count

    # -- internals ------------------------------------------------------------------------------------

    def _marker_ids(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for _, marker in self.g.rules:
            token = self.tokenizer.token_to_id(marker)
            if token is not None:
                out[token] = marker
        return out

    def _next_marker(self, buf: str, pos: int) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for marker in self._markers[self._state]:
            at = buf.find(marker, pos)
            if at >= 0 and (best is None or at < best[0] or (at == best[0] and len(marker) > len(best[1]))):
                best = (at, marker)
        return best

    def _apply(self, out: list[ReasoningEvent], marker: str) -> None:
        rule = self.g.rules.get((self._state, marker))
        if rule is None:  # a dropped special token
            return
        if rule.once:
            self._markers[self._state].remove(marker)
        self._state = rule.to
        if rule.keep:
            self._emit(out, marker)

    def _emit(self, out: list[ReasoningEvent], text: str) -> None:
        if not text:
            return
        if self._state is State.CONTENT:
            _append(out, Content(text))
            return
        if self.g.rstrip_reasoning:
            text = self._pending_ws + text
            body = text.rstrip()
            self._pending_ws = text[len(body) :]
            text = body
        if text:
            _append(out, Reasoning(text))


def _hold_len(text: str, markers: Sequence[str]) -> int:
    """Length of the longest suffix of *text* that is a proper prefix of one of *markers*. Only
    positions holding a marker's first character are tried: this runs on every delta."""
    longest = max(map(len, markers), default=0)
    firsts = {m[0] for m in markers}
    for i in range(max(0, len(text) - longest + 1), len(text)):
        if text[i] in firsts:
            tail = text[i:]
            if any(len(m) > len(tail) and m.startswith(tail) for m in markers):
                return len(text) - i
    return 0


def _append(out: list[ReasoningEvent], event: ReasoningEvent) -> None:
    if out and type(out[-1]) is type(event):
        out[-1] = type(event)(out[-1].text + event.text)
    else:
        out.append(event)


def engine_reasoning_end(
    tokenizer: Tokenizer,
    ids: Sequence[int],
    *,
    end_markers: Sequence[str],
    start_marker: str | None,
    start_opens: bool,
    boundaries: Sequence[str] = (),
    wait_for_reasoning: bool,
) -> bool:
    """vLLM's ``ParserEngine.is_reasoning_end``: scanning back from the end, an end marker (or a
    tool-call opener that implicitly ends reasoning) means ended, the start marker means still open,
    a turn boundary stops the scan; with nothing found, reasoning is over unless the format waits for
    it. As vLLM, a ``</think>``-style end marker missing from the vocabulary disables end detection."""
    end_ids: set[int] = set()
    for marker in end_markers:
        token = tokenizer.token_to_id(marker)
        if token is None and marker == end_markers[0]:
            end_ids = set()
            break
        if token is not None:
            end_ids.add(token)
    start_id = tokenizer.token_to_id(start_marker) if start_marker else None
    boundary_ids = {i for b in boundaries if (i := tokenizer.token_to_id(b)) is not None}
    for token in reversed(ids):
        if token in end_ids:
            return True
        if token == start_id:
            if start_opens:
                return False
            break
        if token in boundary_ids:
            break
    return not wait_for_reasoning


def special_token_texts(tokenizer: Tokenizer, keep: Sequence[str]) -> frozenset[str]:
    """The texts of the tokenizer's special tokens, minus *keep* (the family's own markers): what
    vLLM's parser engine drops from the output."""
    texts = tokenizer.convert_ids_to_tokens(sorted(tokenizer.all_special_ids))
    return frozenset(t for t in texts if t and t not in keep)
