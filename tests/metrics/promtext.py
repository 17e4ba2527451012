"""Reading a /metrics page in tests: ``samples(text)[(name, frozenset(labels))] = value``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(page: Samples, name: str, **labels: str) -> float:
    """The sum over every sample called *name* whose labels include *labels* (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and want <= ls)


def families(page: Samples, prefix: str) -> set[str]:
    return {n for n, _ in page if n.startswith(prefix)}
