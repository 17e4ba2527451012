"""Fixtures for the text layer: the bundled tiny model's tokenizer (loaded once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_front.text.tokenizer import Tokenizer

TINY_MODEL = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_pretrained(TINY_MODEL)
