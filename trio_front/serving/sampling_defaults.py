"""Default sampling parameters from the model's ``generation_config.json`` (vLLM's ``--generation-config``
and ``--override-generation-config``).

vLLM 0.32's ``ModelConfig.get_diff_sampling_param``: the generation config is read from the model folder
(``auto``), from another folder (a path), or not at all (``vllm``); the override is merged over it; the
keys vLLM knows (``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``, ``temperature``,
``top_k``, ``top_p``, ``min_p``, ``max_new_tokens`` → ``max_tokens``) that are not null become the server's
defaults. A request field left unset takes the default, else vLLM's own default (``serving/params.py``).

Reading the file is transformers' ``GenerationConfig.from_pretrained(...).to_diff_dict()``: with
transformers 5 every sampling attribute defaults to ``None``, so every non-null value in the file counts
(``"top_k": 50`` too). Without a ``generation_config.json`` there are no defaults (transformers derives
one from ``config.json``, which with transformers 5 keeps no sampling values).

Pure start-up code: it reads two small files and never blocks on anything else.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

log = logging.getLogger("trio_front.serving")

#: vLLM's ``available_params`` in ``get_diff_sampling_param``, in its order.
SAMPLING_KEYS = (
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "max_new_tokens",
)


@attrs.frozen
class SamplingDefaults:
    """Request fields a request leaves unset take these values (empty: vLLM's own defaults).

    ``values`` is vLLM's ``default_sampling_params`` (``max_new_tokens`` already renamed ``max_tokens``).
    ``override_max_tokens`` is vLLM's ``override_max_tokens``: a cap on every request's ``max_tokens``,
    set by a ``max_new_tokens`` in ``--override-generation-config`` or, with ``--generation-config
    <folder>``, by that folder's ``max_new_tokens`` (with ``auto`` the model's ``max_new_tokens`` only
    fills in a missing ``max_tokens``)."""

    values: dict[str, Any] = attrs.field(factory=dict)
    override_max_tokens: int | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _generation_config(folder: Path, src: str) -> dict[str, Any]:
    """transformers' generation config of *folder* (its non-null entries). Without a
    ``generation_config.json`` transformers derives one from ``config.json``, which with transformers 5
    carries no sampling values (vLLM 0.32 then gets ``{}``); a folder without either file is refused, as
    vLLM's ``get_config`` refuses it at start-up."""
    data = _read_json(folder / "generation_config.json")
    if data is not None:
        return {k: v for k, v in data.items() if v is not None}
    if src != "auto" and not (folder / "config.json").is_file():
        raise ValueError(
            f"--generation-config: {src!r} holds neither a generation_config.json nor a config.json"
        )
    return {}


def _parse_override(override: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``--override-generation-config``: a JSON object (the launch contract's args JSON passes a dict)."""
    if override is None:
        return {}
    if isinstance(override, str):
        try:
            override = json.loads(override)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--override-generation-config: not valid JSON ({exc})") from None
    if not isinstance(override, Mapping):
        raise ValueError("--override-generation-config: expected a JSON object")
    return dict(override)


def _check_value(key: str, value: Any, source: str) -> None:
    """vLLM would hand such a value to every request's ``SamplingParams`` and fail each one; refuse it at
    start-up instead, naming where it came from."""
    is_int_key = key in ("top_k", "max_new_tokens")
    ok = isinstance(value, int) if is_int_key else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        kind = "an integer" if is_int_key else "a number"
        raise ValueError(f"{source}: {key} must be {kind}, got {value!r}")
    if key == "max_new_tokens" and value <= 0:
        raise ValueError(f"{source}: `max_new_tokens` must be greater than 0, but is {value}.")


def load_sampling_defaults(
    model_dir: Path, generation_config: str = "auto", override: str | Mapping[str, Any] | None = None
) -> SamplingDefaults:
    """vLLM's ``get_diff_sampling_param`` and ``override_max_tokens`` for *model_dir*.

    *generation_config* is ``auto`` (the model folder's file), ``vllm`` (no file: only *override*) or a
    folder holding a ``generation_config.json``. *override* is the ``--override-generation-config`` JSON
    object (string or mapping). Raises ``ValueError`` naming the flag or file for an unusable value.
    Logs vLLM's warning when the file's values change the defaults."""
    src = generation_config
    override_values = _parse_override(override)
    if src == "vllm":
        config: dict[str, Any] = {}
    else:
        folder = Path(model_dir) if src == "auto" else Path(src)
        if src != "auto" and not folder.is_dir():
            raise ValueError(f"--generation-config: {src!r} is neither 'auto', 'vllm' nor a directory")
        config = _generation_config(folder, src)
    for key in SAMPLING_KEYS:
        if config.get(key) is not None:
            _check_value(key, config[key], "generation config" if src == "auto" else src)
    for key in SAMPLING_KEYS:
        if override_values.get(key) is not None:
            _check_value(key, override_values[key], "--override-generation-config")
    config.update(override_values)
    values: dict[str, Any] = {}
    if any(k in config for k in SAMPLING_KEYS):
        values = {k: config[k] for k in SAMPLING_KEYS if config.get(k) is not None}
        if "max_new_tokens" in values:  # Hugging Face's max_new_tokens is vLLM's max_tokens
            values["max_tokens"] = values.pop("max_new_tokens")
    if values and src != "vllm":
        log.warning(
            "Default vLLM sampling parameters have been overridden by %s: `%s`. If this is not intended, "
            "please relaunch vLLM instance with `--generation-config vllm`.",
            "the model's `generation_config.json`" if src == "auto" else src,
            values,
        )
    if src not in ("auto", "vllm"):
        override_max = values.get("max_tokens")
    else:
        override_max = override_values.get("max_new_tokens")
    return SamplingDefaults(values, override_max)
