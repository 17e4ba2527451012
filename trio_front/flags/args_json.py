"""The drop-in's ``--args-json``: what vLLM 0.32's ``RustFrontendProcessManager`` passes its frontend.

That JSON holds the snake_case dest of every ``vllm serve`` flag whose value differs from the parser's
default (``jsonify_non_default_args``: dataclasses and pydantic models as dicts, lists as lists), minus
``api_server_count`` and the data-parallel rank / LB dests, plus ``model_tag`` (the positional model, else
``--model``), ``engine_ready_timeout_secs`` and ``http_timeout_keep_alive`` (from vLLM's environment).
It never holds ``VLLM_API_KEY``: vLLM's frontend reads that from the environment, and so does this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from trio_front.flags.vllm_serve import DOWNLOAD_KEYS, map_values


@attrs.frozen
class ArgsJsonResult:
    #: FrontendConfig keyword arguments (not engine_addr or the fds); ``model`` is the model_tag string
    #: (a directory or a Hugging Face id, resolved by the caller), ``tokenizer`` likewise or absent
    fields: dict[str, Any]
    #: one entry per refused key, e.g. ``--tool-parser-plugin (tool parser plugins are not supported)``
    refused: list[str]
    #: keys not in vLLM 0.32's table
    unknown: list[str]
    #: IGNORED keys that were set
    ignored: list[str]
    #: the keys that say where to fetch the model's tokenizer files from (``revision``,
    #: ``tokenizer_revision``, ``hf_token``, ``download_dir``) as given, for the caller's download
    download: dict[str, Any] = attrs.field(factory=dict)


def from_args_json(data: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> ArgsJsonResult:
    """Map vLLM's args JSON (already decoded) to FrontendConfig fields.

    Pure: reads only *data* and *environ* (``VLLM_API_KEY`` when ``api_key`` is absent). ``host`` and
    ``port`` are mapped too, though the drop-in serves the socket vLLM bound. A refused key does not stop
    the mapping; the caller exits non-zero when ``refused`` is not empty.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"the args JSON must be an object, got {type(data).__name__}")
    mapped = map_values(data, environ)
    download = {key: data[key] for key in DOWNLOAD_KEYS if data.get(key) is not None}
    return ArgsJsonResult(mapped.fields, mapped.refused, mapped.unknown, mapped.ignored, download)
