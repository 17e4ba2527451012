"""Scripted output for the mock engine: "when the prompt says X, the model answers Y".

With ``MockEngineConfig.script`` (``trio-front mock-engine --script FILE``) the mock decodes each request's
prompt once and, if a rule matches, emits that rule's token ids instead of the deterministic rule of
:mod:`.rules` — so a frontend's parsers (tool calls, reasoning) can be driven by realistic model output
without a model. Requests whose prompt matches no rule use the deterministic rule as before.

**File format** (JSON)::

    {
      "tokenizer": "<model dir or tokenizer.json>",     # relative paths are relative to the script file
      "rules": [
        {"when": "<substring of the decoded prompt>", "text": "<assistant output>"},
        {"when": "<substring>", "ids": [17, 4096, 202]}
      ]
    }

* ``when`` is matched against the prompt decoded with ``skip_special_tokens=False`` (so chat-template
  markers are visible); the **first** matching rule wins; ``""`` matches every prompt.
* ``text`` is encoded once, at load time, with no special tokens added; ``ids`` are used as given
  (each must be in ``[0, vocab)``). Exactly one of the two per rule.

**Output of a matched request** (see ``Generation`` in :mod:`.rules`): the script's ids, one per engine
step, then the request's ``_eos_token_id`` (finish STOP). The usual stopping rules still apply after each
token, in vLLM's order: an ``_eos_token_id`` or a ``stop_token_ids`` id inside the script ends it (STOP),
``max_tokens`` / ``max_model_len`` end it with LENGTH. ``min_tokens`` masks like the sampler does: no
EOS / stop id before ``min_tokens`` (a masked scripted id becomes the next unmasked id; past the script's
end the ordinary rule fills in until EOS is allowed). Without an ``_eos_token_id`` (vLLM's frontend
leaves it unset for ``ignore_eos``) the ordinary rule continues after the script until a limit. The seed
EOS rule does not apply to scripted requests. Logprob rows are those of :func:`.rules.logprob_row`.

:func:`parse_script` is pure (data + tokenizer in, :class:`Script` out); :func:`load_script` does the
file reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import tokenizers


class ScriptError(ValueError):
    """The script file is malformed."""


@attrs.frozen
class ScriptRule:
    when: str
    ids: tuple[int, ...]


@attrs.frozen
class Script:
    """Loaded rules plus the tokenizer that decodes prompts; :meth:`match` is called once per request."""

    rules: tuple[ScriptRule, ...]
    tokenizer: tokenizers.Tokenizer = attrs.field(eq=False, repr=False)

    def match(self, prompt_ids: Sequence[int]) -> tuple[int, list[int]] | None:
        """``(rule index, output ids)`` of the first rule whose ``when`` occurs in the decoded prompt."""
        prompt = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
        for index, rule in enumerate(self.rules):
            if rule.when in prompt:
                return index, list(rule.ids)
        return None


def parse_script(data: Any, tokenizer: tokenizers.Tokenizer, *, vocab: int | None = None) -> Script:
    """Validate the decoded JSON of a script and encode its texts with *tokenizer*."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ScriptError('a script is an object with a "rules" list')
    rules: list[ScriptRule] = []
    for n, raw in enumerate(data["rules"]):
        where = f"rule {n}"
        if not isinstance(raw, dict) or not isinstance(raw.get("when"), str):
            raise ScriptError(f'{where}: needs a string "when"')
        unknown = set(raw) - {"when", "text", "ids"}
        if unknown:
            raise ScriptError(f"{where}: unknown keys {sorted(unknown)}")
        if ("text" in raw) == ("ids" in raw):
            raise ScriptError(f'{where}: needs exactly one of "text" and "ids"')
        if "text" in raw:
            if not isinstance(raw["text"], str):
                raise ScriptError(f'{where}: "text" must be a string')
            ids = tuple(tokenizer.encode(raw["text"], add_special_tokens=False).ids)
        else:
            ids_raw = raw["ids"]
            # bool is an int subclass; an id list with true/false in it is a typo, not ids 0/1.
            if not isinstance(ids_raw, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids_raw
            ):
                raise ScriptError(f'{where}: "ids" must be a list of non-negative integers')
            ids = tuple(ids_raw)
        if vocab is not None and any(i >= vocab for i in ids):
            raise ScriptError(f"{where}: token id {max(ids)} is not below the engine's vocab {vocab}")
        rules.append(ScriptRule(raw["when"], ids))
    return Script(tuple(rules), tokenizer)


def tokenizer_file(script_path: str | os.PathLike[str], entry: Any) -> Path:
    """The ``tokenizer.json`` a script names (a directory means its ``tokenizer.json``)."""
    if not isinstance(entry, str) or not entry:
        raise ScriptError('a script needs a "tokenizer" path (model directory or tokenizer.json)')
    path = Path(entry)
    if not path.is_absolute():
        path = Path(script_path).parent / path
    return path / "tokenizer.json" if path.is_dir() else path


def load_script(path: str | os.PathLike[str], *, vocab: int | None = None) -> Script:
    """Read and parse the script at *path* (and the tokenizer it names)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ScriptError(f"cannot read script {path}: {exc}") from None
    tok_path = tokenizer_file(path, data.get("tokenizer") if isinstance(data, dict) else None)
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise ScriptError(f"cannot load tokenizer {tok_path}: {exc}") from None
    return parse_script(data, tokenizer, vocab=vocab)
