"""Read the text-side files of a Hugging Face model directory.

Only plain files are read here (no ``transformers``): ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``, ``generation_config.json``, ``config.json`` and the chat template(s).
The precedence rules are the ones vLLM 0.32 gets through ``transformers`` 5.x
(``PreTrainedTokenizerBase._from_pretrained``):

* Named special tokens (``bos_token`` ...) come from ``tokenizer_config.json``; they may be strings or
  ``AddedToken``-like dicts (``{"content": ...}``). ``special_tokens_map.json`` is a legacy file that
  transformers only reads when ``tokenizer_config.json`` has no ``added_tokens_decoder``; its values
  then override the config's.
* Chat templates: ``chat_template.jinja`` and ``additional_chat_templates/*.jinja`` take priority over the
  ``chat_template`` entry of ``tokenizer_config.json``, which is either a string or a list of
  ``{"name", "template"}`` dicts. A single template is stored under the name ``"default"``.
* ``add_bos_token``/``add_eos_token`` in ``tokenizer_config.json`` are ignored when ``tokenizer.json``
  exists (transformers pops them): the BOS behaviour is whatever ``tokenizer.json``'s post-processor does.

Everything is loaded once at startup; the result is immutable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

#: Named special-token attributes, in transformers' order (``SPECIAL_TOKENS_ATTRIBUTES``).
SPECIAL_TOKEN_ATTRIBUTES: tuple[str, ...] = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class ModelFilesError(ValueError):
    """A model directory is missing a required file or has a malformed one."""


@attrs.frozen
class ModelFiles:
    """The text-related contents of a model directory.

    ``special_tokens`` maps named attributes (``"bos_token"`` ...) to token strings (only those set).
    ``extra_special_tokens`` are the additional special tokens named in the config.
    ``chat_templates`` maps template names to Jinja sources (``"default"`` for the main one); empty when the
    model has no template. ``generation_eos_token_ids`` are generation_config's ``eos_token_id`` (an int or
    a list there), in order. ``max_position_embeddings``/``vocab_size`` come from ``config.json``.
    """

    path: Path
    tokenizer_json: Path
    tokenizer_config: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    special_tokens: Mapping[str, str]
    extra_special_tokens: tuple[str, ...]
    chat_templates: Mapping[str, str] = attrs.field(repr=False)
    generation_config: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    generation_eos_token_ids: tuple[int, ...]
    max_position_embeddings: int | None
    vocab_size: int | None
    model_max_length: int | None
    clean_up_tokenization_spaces: bool
    tokenizer_class: str | None
    #: experts per MoE layer (``config.json``, the keys vLLM's ``get_num_experts`` reads); 0 for a dense model
    num_experts: int = 0

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")


def token_content(value: object) -> str | None:
    """The string of a special token given as a string or an ``AddedToken``-like dict."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ModelFilesError(f"unsupported special token value: {value!r}")


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFilesError(f"{path} is not a JSON object")
    return data


def _special_tokens(
    config: Mapping[str, Any], special_map: Mapping[str, Any] | None
) -> tuple[dict[str, str], tuple[str, ...]]:
    merged: dict[str, Any] = dict(config)
    # transformers reads special_tokens_map.json only for configs without added_tokens_decoder.
    if special_map is not None and "added_tokens_decoder" not in config:
        merged.update(special_map)
    named = {}
    for attr in SPECIAL_TOKEN_ATTRIBUTES:
        content = token_content(merged.get(attr))
        if content is not None:
            named[attr] = content
    extra_raw = merged.get("extra_special_tokens") or merged.get("additional_special_tokens") or ()
    if isinstance(extra_raw, Mapping):  # model-specific named tokens ({"image_token": "<img>"})
        extra_raw = list(extra_raw.values())
    extra = tuple(c for c in (token_content(v) for v in extra_raw) if c is not None)
    return named, extra


def _chat_templates(path: Path, config: Mapping[str, Any]) -> dict[str, str]:
    files: dict[str, str] = {}
    default_file = path / "chat_template.jinja"
    if default_file.is_file():
        files["default"] = default_file.read_text(encoding="utf-8")
    extra_dir = path / "additional_chat_templates"
    if extra_dir.is_dir():
        for template_file in sorted(extra_dir.glob("*.jinja")):
            files[template_file.stem] = template_file.read_text(encoding="utf-8")
    if files:  # separate files win over the config entry, as in transformers
        return files
    raw = config.get("chat_template")
    if raw is None:
        return {}
    if isinstance(raw, str):
        return {"default": raw}
    if isinstance(raw, list):
        try:
            return {str(item["name"]): str(item["template"]) for item in raw}
        except (TypeError, KeyError) as exc:
            raise ModelFilesError(f"malformed chat_template list in tokenizer_config.json: {exc}") from exc
    raise ModelFilesError("chat_template in tokenizer_config.json must be a string or a list")


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _eos_ids(value: object) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ()


def load_model_files(path: str | Path) -> ModelFiles:
    """Read a model directory. Raises `ModelFilesError` if ``tokenizer.json`` is missing or a file is
    malformed; every other file is optional."""
    root = Path(path)
    tokenizer_json = root / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise ModelFilesError(f"{root} has no tokenizer.json (only fast tokenizers are supported)")
    config = _read_json(root / "tokenizer_config.json") or {}
    special_map = _read_json(root / "special_tokens_map.json")
    generation = _read_json(root / "generation_config.json") or {}
    model_config = _read_json(root / "config.json") or {}
    # Multimodal configs keep the language model's settings under text_config.
    text_config = model_config.get("text_config")
    if isinstance(text_config, dict):
        model_config = {**model_config, **text_config}
    named, extra = _special_tokens(config, special_map)
    max_length = _int_or_none(config.get("model_max_length"))
    tokenizer_class = config.get("tokenizer_class")
    return ModelFiles(
        path=root,
        tokenizer_json=tokenizer_json,
        tokenizer_config=config,
        special_tokens=named,
        extra_special_tokens=extra,
        chat_templates=_chat_templates(root, config),
        generation_config=generation,
        generation_eos_token_ids=_eos_ids(generation.get("eos_token_id")),
        max_position_embeddings=_int_or_none(model_config.get("max_position_embeddings")),
        vocab_size=_int_or_none(model_config.get("vocab_size")),
        # transformers uses a huge sentinel (int(1e30)) for "no limit".
        model_max_length=max_length if max_length is not None and max_length < 10**12 else None,
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        tokenizer_class=tokenizer_class if isinstance(tokenizer_class, str) else None,
        num_experts=_num_experts(model_config),
    )


#: vLLM's ``get_num_experts`` keys (model_arch_config_convertor.py), in order: Jamba, Dbrx, DeepSeek, Mixtral.
_EXPERT_KEYS = ("num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts")


def _num_experts(model_config: Mapping[str, Any]) -> int:
    """The value of the first of `_EXPERT_KEYS` present, as vLLM's ``getattr_iter`` takes it (so a present 0
    or null wins over a later key); a list, as Ernie VL writes it, gives its first entry. vLLM also reads
    per-block configs when that value is unset, and transformers' config classes may add defaults
    config.json lacks: models that only have those read as dense here."""
    key = next((k for k in _EXPERT_KEYS if k in model_config), None)
    value = model_config.get(key) if key is not None else 0
    if isinstance(value, list):
        value = value[0] if value else 0
    return value if type(value) is int else 0
