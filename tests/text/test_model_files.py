"""Reading model directories: special tokens, chat template precedence, generation/model configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trio_front.text.model_files import ModelFilesError, load_model_files

from .conftest import TINY_MODEL


def make_dir(tmp_path: Path, **files: object) -> Path:
    shutil.copy(TINY_MODEL / "tokenizer.json", tmp_path / "tokenizer.json")
    for name, content in files.items():
        path = tmp_path / name.replace("__", "/").replace("_DOT_", ".")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return tmp_path


def test_tiny_model() -> None:
    files = load_model_files(TINY_MODEL)
    assert files.bos_token == "<s>"
    assert files.eos_token == "</s>"
    assert files.special_tokens["pad_token"] == "<pad>"
    assert files.generation_eos_token_ids == (2,)
    assert files.max_position_embeddings == 4096
    assert files.vocab_size == 4096
    # chat_template.jinja wins over the tokenizer_config entry (here they are the same template).
    assert list(files.chat_templates) == ["default"]
    assert "add_generation_prompt" in files.chat_templates["default"]


def test_added_token_dicts_and_lists(tmp_path: Path) -> None:
    config = {
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False},
        "eos_token": "</s>",
        "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}],
        "additional_special_tokens": [{"content": "<x>"}, "<y>"],
    }
    gen = {"eos_token_id": [2, 7]}
    model = {"text_config": {"max_position_embeddings": 128, "vocab_size": 100}}
    files = load_model_files(
        make_dir(
            tmp_path,
            tokenizer_config_DOT_json=config,
            generation_config_DOT_json=gen,
            config_DOT_json=model,
        )
    )
    assert files.bos_token == "<s>"
    assert files.extra_special_tokens == ("<x>", "<y>")
    assert dict(files.chat_templates) == {"default": "D", "tool_use": "T"}
    assert files.generation_eos_token_ids == (2, 7)
    assert files.max_position_embeddings == 128


def test_special_tokens_map_only_without_added_tokens_decoder(tmp_path: Path) -> None:
    stmap = {"eos_token": {"content": "<|end|>"}}
    files = load_model_files(
        make_dir(tmp_path, tokenizer_config_DOT_json={"eos_token": "</s>"}, special_tokens_map_DOT_json=stmap)
    )
    assert files.eos_token == "<|end|>"
    other = tmp_path / "other"
    other.mkdir()
    config = {"eos_token": "</s>", "added_tokens_decoder": {}}
    files = load_model_files(
        make_dir(other, tokenizer_config_DOT_json=config, special_tokens_map_DOT_json=stmap)
    )
    assert files.eos_token == "</s>"


def test_template_files_win(tmp_path: Path) -> None:
    files = load_model_files(
        make_dir(
            tmp_path,
            tokenizer_config_DOT_json={"chat_template": "from config"},
            chat_template_DOT_jinja="from file",
            additional_chat_templates__rag_DOT_jinja="rag file",
        )
    )
    assert dict(files.chat_templates) == {"default": "from file", "rag": "rag file"}


def test_no_template_and_errors(tmp_path: Path) -> None:
    assert load_model_files(make_dir(tmp_path)).chat_templates == {}
    with pytest.raises(ModelFilesError, match=r"tokenizer\.json"):
        load_model_files(tmp_path / "missing")
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ModelFilesError):
        load_model_files(tmp_path)


def test_text_layer_imports_no_ml_frameworks() -> None:
    code = (
        "import sys, trio_front.text\n"
        "bad = sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
