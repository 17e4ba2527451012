"""Incremental marker lexer shared by the engine-style tool parsers (sans-IO).

Contract: text is split into *marker* tokens (the longest literal that matches at a position) and
plain text, left to right — the tokenisation vLLM 0.32's ``IncrementalLexer`` gives a whole output.
Fed in pieces, the lexer holds back only a tail that is still a proper prefix of some marker, so the
tokens of any chunking concatenate to the tokens of the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: A lexed piece: ``(marker name, text)``, or ``(None, text)`` for plain text.
Token = tuple[str | None, str]


class MarkerLexer:
    def __init__(self, markers: Iterable[tuple[str, str]]) -> None:
        """*markers*: ``(literal, name)`` pairs."""
        self._names: dict[str, str] = dict(markers)
        by_first: dict[str, list[str]] = {}
        for lit in self._names:
            by_first.setdefault(lit[0], []).append(lit)
        # Longest first, so the first literal that matches is the longest match.
        self._by_first = {c: sorted(lits, key=len, reverse=True) for c, lits in by_first.items()}
        self._prefixes = frozenset(lit[:i] for lit in self._names for i in range(1, len(lit)))
        self._max = max(map(len, self._names))
        self._first_re = re.compile("[" + "".join(re.escape(c) for c in by_first) + "]")
        self._buf = ""

    def feed(self, text: str, *, final: bool = False) -> list[Token]:
        buf = self._buf + text
        self._buf = ""
        out: list[Token] = []
        start = 0  # start of the pending plain text
        pos = 0
        n = len(buf)
        while True:
            m = self._first_re.search(buf, pos)
            if m is None:
                break
            i = m.start()
            if not final and n - i < self._max and buf[i:] in self._prefixes:
                # Could still become a (longer) marker: hold it for the next piece.
                self._buf = buf[i:]
                n = i
                break
            lit = next((lit for lit in self._by_first[buf[i]] if buf.startswith(lit, i)), None)
            if lit is None:
                pos = i + 1
                continue
            if i > start:
                out.append((None, buf[start:i]))
            out.append((self._names[lit], lit))
            pos = start = i + len(lit)
        if n > start:
            out.append((None, buf[start:n]))
        return out

    def flush(self) -> list[Token]:
        """The output ended: what was held back, lexed as final."""
        return self.feed("", final=True) if self._buf else []
