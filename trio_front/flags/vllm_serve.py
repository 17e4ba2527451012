"""Every dest of vLLM 0.32's ``vllm serve`` parser, and what trio-front does with it.

Each dest has one :class:`Kind`:

* ``HONOURED``: maps to :class:`~trio_front.server.FrontendConfig` fields (``convert``); some values may
  still be refused (the converter raises :class:`Refused`).
* ``ENGINE``: takes effect in vLLM's engine core or its ``vllm serve`` supervisor (dtype, parallelism,
  KV cache, compilation, quantization, speculative decoding, the launcher's own settings...); the frontend
  needs nothing (``max_model_len`` comes with the engine's registration).
* ``IGNORED``: only changes vLLM's logs, docs pages, or parts of vLLM we do not serve at all and that stay
  off without another flag (multimodal input, the Cohere / Anthropic endpoints); set, it is logged once.
* ``REFUSED``: changes what vLLM's frontend does in a way trio-front does not implement; a value other
  than the harmless ones (``ok``; always the default) stops start-up with a message naming the flag.

The values are the args-JSON forms (``jsonify_non_default_args``: dataclasses as dicts, lists as lists) or
the argparse forms of :mod:`.options` (a JSON flag as its string); converters take both. The table's
``default`` is vLLM's (JSON form), checked against vLLM itself by ``tests/flags``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs


class Kind(enum.Enum):
    HONOURED = "honoured"
    ENGINE = "engine"
    IGNORED = "ignored"
    REFUSED = "refused"


class Refused(ValueError):
    """A value trio-front cannot honour; the message says why (the flag is named by the caller)."""


_NO_DEFAULT = object()


@attrs.frozen
class Flag:
    dest: str
    kind: Kind
    #: vLLM's default (JSON form); a value equal to it is as if the flag were not given
    default: Any = _NO_DEFAULT
    #: HONOURED: value → FrontendConfig fields (raises Refused / ValueError for values it cannot take);
    #: ENGINE: what a non-null value implies for the frontend too (:data:`_ENGINE_IMPLIES`)
    convert: Callable[[Any], dict[str, Any]] | None = None
    #: REFUSED: values that are harmless after all (the default always is)
    ok: Callable[[Any], bool] | None = None
    #: why it is refused / ignored, for the message
    why: str = ""

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")

    def is_default(self, value: Any) -> bool:
        return self.default is not _NO_DEFAULT and value == self.default


# ---------------------------------------------------------------------------------------- converters


def _field(name: str, cast: Callable[[Any], Any] = lambda v: v) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: cast(value)}


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _fingerprint_mode(value: Any) -> str:
    if value not in ("full", "hash", "custom", "none"):
        raise ValueError(f"expected one of full, hash, custom, none, got {value!r}")
    return value


_EFFORTS = ("auto", "none", "low", "medium", "high", "xhigh", "max")


def _disabled_thinking_effort(value: Any) -> str:
    if value not in _EFFORTS:
        raise ValueError(f"expected one of {', '.join(_EFFORTS)}, got {value!r}")
    return value


def _opt_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):  # the argparse form
        value = json.loads(value)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {value!r}")
    return value or None


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _parser_name(value: Any) -> str | None:
    return _opt_str(value) or None  # vLLM's --reasoning-parser default is '' (none)


def _served_model_name(value: Any) -> dict[str, Any]:
    if value is None:
        return {"served_model_name": None, "served_model_aliases": ()}
    names = _str_list(value)
    if not names:
        raise ValueError("expected at least one name")
    return {"served_model_name": names[0], "served_model_aliases": names[1:]}


def _api_key(value: Any) -> dict[str, Any]:
    # vLLM: ``[key for key in (args.api_key or [envs.VLLM_API_KEY]) if key]``; map_values adds the env.
    if not value:
        return {}
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")  # no value in the message: it is a secret
    return {"api_keys": tuple(k for k in value if k)}


def _lora_modules(value: Any) -> dict[str, Any]:
    """The JSON's list of LoRAModulePath dicts, or the command line's ``name=path`` / JSON strings, as the
    strings FrontendConfig takes (``serving/lora.py`` parses and checks them as vLLM does)."""
    if value is None:
        return {"lora_modules": ()}
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {value!r}")
    items = []
    for item in value:
        if isinstance(item, dict):
            items.append(json.dumps(item))
        elif isinstance(item, str):
            items.append(item)
        else:
            raise ValueError(f"expected name=path, a JSON object or an object, got {item!r}")
    return {"lora_modules": tuple(items)}


def _json_object_text(value: Any, flag: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return json.dumps(value) if value else None


def _structured_outputs_config(value: Any) -> dict[str, Any]:
    """vLLM's StructuredOutputsConfig (a dict in the JSON: every key) as FrontendConfig's JSON text, minus
    the keys left at vLLM's defaults; the keys trio-front lacks are refused."""
    if value is None:
        return {"structured_outputs_config": None}
    data = value
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except ValueError:  # StructuredConfig.from_json says what is wrong, naming the flag
            return {"structured_outputs_config": value}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    data = dict(data)
    if data.pop("reasoning_parser_plugin", "") not in ("", None):
        raise Refused("reasoning_parser_plugin: reasoning parser plugins are not supported")
    if data.pop("enable_in_reasoning", False):
        raise Refused("enable_in_reasoning: structured outputs inside the reasoning are not supported")
    if data.get("reasoning_parser", "") in ("", None):
        data.pop("reasoning_parser", None)  # refused by StructuredConfig.from_json when set
    defaults = {"backend": "auto", "disable_any_whitespace": False, "disable_additional_properties": False}
    data = {k: v for k, v in data.items() if defaults.get(k, _NO_DEFAULT) != v}
    return {"structured_outputs_config": json.dumps(data) if data else None}


def _keep_alive(value: Any) -> dict[str, Any]:
    seconds = _number(value) if value is not None else 0.0
    if seconds < 0:
        raise ValueError("must be a non-negative number of seconds (0 disables keep-alive comments)")
    return {"keep_alive_interval": seconds or None}


def _opt_positive(value: Any) -> int | None:
    return None if value is None else _positive(value)


def _positive(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _non_negative(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"must not be negative, got {value}")
    return number


def _nothing(value: Any) -> dict[str, Any]:
    return {}


# -------------------------------------------------------------------------------------------- the table

#: the keys of a JSON the frontend resolves itself when it fetches the tokenizer files (``frontend.py``)
DOWNLOAD_KEYS = ("revision", "tokenizer_revision", "hf_token", "download_dir")

_HONOURED: list[Flag] = [
    Flag("model_tag", Kind.HONOURED, None, _field("model", _opt_str)),
    Flag("model", Kind.HONOURED, "Qwen/Qwen3-0.6B", _nothing),  # map_values: the fallback for model_tag
    Flag("tokenizer", Kind.HONOURED, None, _field("tokenizer", _opt_str)),
    *(Flag(key, Kind.HONOURED, None, _nothing) for key in DOWNLOAD_KEYS),  # ArgsJsonResult.download
    Flag("served_model_name", Kind.HONOURED, None, _served_model_name),
    Flag("host", Kind.HONOURED, None, lambda v: {} if v is None else {"host": _str(v)}),
    Flag("port", Kind.HONOURED, 8000, _field("port", _int)),
    Flag("uds", Kind.HONOURED, None, _field("uds", _opt_str)),
    Flag("root_path", Kind.HONOURED, None, _field("root_path", _opt_str)),
    Flag("api_key", Kind.HONOURED, None, _api_key),
    Flag("allowed_origins", Kind.HONOURED, [], _field("allowed_origins", _str_list)),
    Flag("allowed_methods", Kind.HONOURED, ["*"], _field("allowed_methods", _str_list)),
    Flag("allowed_headers", Kind.HONOURED, ["*"], _field("allowed_headers", _str_list)),
    Flag("allow_credentials", Kind.HONOURED, False, _field("allow_credentials", _bool)),
    Flag("ssl_keyfile", Kind.HONOURED, None, _field("ssl_keyfile", _opt_str)),
    Flag("ssl_certfile", Kind.HONOURED, None, _field("ssl_certfile", _opt_str)),
    Flag("ssl_ca_certs", Kind.HONOURED, None, _field("ssl_ca_certs", _opt_str)),
    Flag("ssl_cert_reqs", Kind.HONOURED, 0, _field("ssl_cert_reqs", _int)),
    Flag("ssl_ciphers", Kind.HONOURED, None, _field("ssl_ciphers", _opt_str)),
    Flag("enable_request_id_headers", Kind.HONOURED, False, _field("enable_request_id_headers", _bool)),
    Flag("disable_uvicorn_access_log", Kind.HONOURED, False, lambda v: {"access_log": not _bool(v)}),
    Flag(
        "h11_max_incomplete_event_size", Kind.HONOURED, 4194304, _field("h11_max_incomplete_event_size", _int)
    ),
    Flag("h11_max_header_count", Kind.HONOURED, 256, _field("h11_max_header_count", _int)),
    Flag("shutdown_timeout", Kind.HONOURED, 0, _field("shutdown_timeout", _non_negative)),
    Flag("chat_template", Kind.HONOURED, None, _field("chat_template", _opt_str)),
    Flag("trust_request_chat_template", Kind.HONOURED, False, _field("trust_request_chat_template", _bool)),
    Flag("response_role", Kind.HONOURED, "assistant", _field("response_role", _str)),
    Flag("generation_config", Kind.HONOURED, "auto", _field("generation_config", _str)),
    Flag(
        "override_generation_config",
        Kind.HONOURED,
        {},
        lambda v: {"override_generation_config": _json_object_text(v, "--override-generation-config")},
    ),
    Flag("enable_auto_tool_choice", Kind.HONOURED, False, _field("enable_auto_tool_choice", _bool)),
    Flag("tool_call_parser", Kind.HONOURED, None, _field("tool_call_parser", _parser_name)),
    Flag(
        "exclude_tools_when_tool_choice_none",
        Kind.HONOURED,
        False,
        _field("exclude_tools_when_tool_choice_none", _bool),
    ),
    Flag("reasoning_parser", Kind.HONOURED, "", _field("reasoning_parser", _parser_name)),
    Flag(
        "structured_outputs_config",
        Kind.HONOURED,
        {
            "backend": "auto",
            "disable_any_whitespace": False,
            "disable_additional_properties": False,
            "reasoning_parser": "",
            "reasoning_parser_plugin": "",
            "enable_in_reasoning": False,
        },
        _structured_outputs_config,
    ),
    Flag("max_logprobs", Kind.HONOURED, 20, _field("max_logprobs", _int)),
    Flag("lora_modules", Kind.HONOURED, None, _lora_modules),
    Flag("enable_scale_out", Kind.HONOURED, False, _field("enable_scale_out", _bool)),
    Flag("enable_server_load_tracking", Kind.HONOURED, False, _field("enable_server_load_tracking", _bool)),
    Flag("sse_keep_alive_interval", Kind.HONOURED, 0, _keep_alive),
    Flag("stream_interval", Kind.HONOURED, 1, _field("stream_interval", _positive)),
    # Data parallelism (engine/dp.py): the group's size, and how many ranks `serve` starts here.
    Flag("data_parallel_size", Kind.HONOURED, 1, _field("data_parallel_size", _positive)),
    Flag("data_parallel_size_local", Kind.HONOURED, None, _field("data_parallel_size_local", _opt_positive)),
    # Not parser dests: RustFrontendProcessManager adds them from VLLM_ENGINE_READY_TIMEOUT_S and
    # VLLM_HTTP_TIMEOUT_KEEP_ALIVE.
    Flag("engine_ready_timeout_secs", Kind.HONOURED, 600, _field("engine_ready_timeout", _non_negative)),
    Flag("http_timeout_keep_alive", Kind.HONOURED, 5, _field("http_timeout_keep_alive", _non_negative)),
]

#: Keys RustFrontendProcessManager adds that are not dests of vLLM's parser.
EXTRA_KEYS = frozenset({"engine_ready_timeout_secs", "http_timeout_keep_alive"})


def _refused(dest: str, default: Any, why: str, ok: Callable[[Any], bool] | None = None) -> Flag:
    return Flag(dest, Kind.REFUSED, default, ok=ok, why=why)


def _in(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value in values


_NOT_SUPPORTED = "not supported by trio-front"
_MM = "multimodal input is not supported by trio-front"
_UNTIL_LANDED = "not supported by trio-front yet"

_REFUSED: list[Flag] = [
    _refused("headless", False, "a headless vLLM starts no frontend"),
    _refused("grpc", False, "vLLM's gRPC server is not supported"),
    _refused("grpc_port", None, "the gRPC services are not supported"),
    _refused("api_server_count", None, "use trio-front run --workers", ok=_in(None, 1)),
    _refused(
        "data_parallel_multi_port_external_lb",
        False,
        "the multi-port external load balancer (vLLM's DP supervisor) is not supported",
    ),
    _refused("tool_parser_plugin", "", "tool parser plugins are not supported", ok=_in("", None)),
    _refused("reasoning_parser_plugin", "", "reasoning parser plugins are not supported", ok=_in("", None)),
    _refused("tool_strict_level", "auto", "server-side tool strictness is not supported"),
    _refused("tool_server", None, "tool servers (built-in tools) are not supported"),
    _refused("middleware", [], "custom ASGI middleware cannot run in trio-front", ok=_in([], None)),
    _refused("enable_ssl_refresh", False, "reloading certificates is not supported"),
    _refused("tokens_only", False, "the tokens-only server is not supported"),
    _refused("enable_tokenizer_info_endpoint", False, "/tokenizer_info is not served"),
    _refused("skip_tokenizer_init", False, "trio-front always tokenizes"),
    _refused(
        "tokenizer_mode", "auto", "only the Hugging Face tokenizer (auto, hf) is supported", ok=_in("hf")
    ),
    _refused("runner", "auto", "only generative models are served", ok=_in("generate")),
    _refused("convert", "auto", "only generative models are served", ok=_in("none")),
    _refused("io_processor_plugin", None, "IO processor plugins are not supported"),
    _refused("hf_config_path", None, "trio-front reads the model directory's own configs"),
    _refused(
        "hf_overrides",
        {},
        "trio-front reads vocab_size from the model directory's config.json",
        ok=lambda v: isinstance(v, dict) and not {"vocab_size", "text_config"} & set(v),
    ),
    _refused("chat_template_content_format", "auto", "only the auto content format is supported"),
    Flag(
        "default_chat_template_kwargs",
        Kind.HONOURED,
        None,
        _field("default_chat_template_kwargs", _opt_object),
    ),
    # /v1/messages' thinking.type=disabled -> this reasoning_effort (auto: vLLM's chat-template probe)
    Flag(
        "anthropic_disabled_thinking_effort",
        Kind.HONOURED,
        "auto",
        _field("anthropic_disabled_thinking_effort", _disabled_thinking_effort),
    ),
    _refused("cohere_format", "cmd4", "Cohere prompt formats are not supported"),
    Flag("return_tokens_as_token_ids", Kind.HONOURED, False, _field("return_tokens_as_token_ids", _bool)),
    Flag("enable_force_include_usage", Kind.HONOURED, False, _field("enable_force_include_usage", _bool)),
    _refused("enable_prompt_tokens_details", False, _UNTIL_LANDED),
    _refused("enable_per_request_metrics", False, "per-request metrics in responses are not supported"),
    _refused("custom_histogram_buckets", None, "/metrics has vLLM's default buckets only"),
    Flag("fingerprint_mode", Kind.HONOURED, "full", _field("fingerprint_mode", _fingerprint_mode)),
    Flag("fingerprint_value", Kind.HONOURED, None, _field("fingerprint_value", _opt_str)),
    _refused("enable_prompt_embeds", False, "prompt embeddings are not supported"),
    _refused("enable_mm_embeds", False, _MM),
    _refused("trust_request_mm_kwargs", False, _MM),
    _refused("allowed_local_media_path", "", _MM),
    _refused("enable_return_routed_experts", False, "returning routed experts is not supported"),
    _refused(
        "aux_output_config",
        {"enable_return_routed_experts": False, "max_bytes": None},
        "returning routed experts is not supported",
        ok=lambda v: isinstance(v, dict) and not v.get("enable_return_routed_experts"),
    ),
    _refused("return_sampling_mask", False, "sampling-distribution replay is not supported"),
    _refused("enable_trace_replay", False, "trace replay (trace_decode_token_ids) is not supported"),
    _refused("reasoning_config", None, "thinking token budgets are not supported"),
    _refused("diffusion_config", None, "diffusion models are not supported"),
    _refused("watermark_config", None, "watermarking is not supported"),
    _refused("logits_processors", None, "custom logits processors' request arguments are not checked"),
    _refused(
        "profiler_config",
        _NO_DEFAULT,  # a dict of every profiler setting, profiler None: accepted by ``ok``
        "the profiler endpoints are not served",
        ok=lambda v: isinstance(v, dict) and v.get("profiler") is None,
    ),
    _refused("weight_transfer_config", None, "weight transfer endpoints are not served"),
    _refused(
        "enable_fault_tolerance", False, "engine fault tolerance needs frontend support trio-front lacks"
    ),
    _refused("enable_elastic_ep", False, "elastic expert parallelism rescales data parallelism at run time"),
]

_IGNORED_WHY = {
    "config": "vllm serve already applied the config file",
    "disable_log_stats": "changes only logs and metrics",
    "aggregate_engine_logging": "changes only logs",
    "enable_log_requests": "changes only logs",
    "max_log_len": "changes only logs",
    "enable_log_outputs": "changes only logs",
    "enable_log_deltas": "changes only logs",
    "log_error_stack": "changes only logs",
    "uvicorn_log_level": "changes only logs",
    "disable_access_log_for_endpoints": "changes only logs",
    "logging_config": "changes only logs",
    "log_level": "changes only logs",
    "log_config_file": "changes only logs",
    "show_hidden_metrics_for_version": "changes only metrics",
    "otlp_traces_endpoint": "changes only tracing",
    "disable_fastapi_docs": "trio-front serves no docs pages",
    "enable_offline_docs": "trio-front serves no docs pages",
    "cohere_is_reasoning_model": "the Cohere endpoint is not served",
    "enable_flash_late_interaction": "pooling endpoints are not served",
    "renderer_num_workers": "changes only vLLM's own renderer threads",
    "limit_mm_per_prompt": _MM,
    "media_io_kwargs": _MM,
    "mm_processor_kwargs": _MM,
    "interleave_mm_strings": _MM,
    "allowed_media_domains": _MM,
    "default_mm_loras": _MM,
}

#: vLLM's IGNORED defaults (JSON form), so an explicitly given default is not reported.
_IGNORED_DEFAULTS = {
    "config": None, "disable_log_stats": False, "aggregate_engine_logging": False,
    "enable_log_requests": False, "max_log_len": None, "enable_log_outputs": False,
    "enable_log_deltas": True, "log_error_stack": False, "uvicorn_log_level": "info",
    "disable_access_log_for_endpoints": None, "logging_config": None, "log_level": None,
    "log_config_file": None, "show_hidden_metrics_for_version": None, "otlp_traces_endpoint": None,
    "disable_fastapi_docs": False, "enable_offline_docs": False, "cohere_is_reasoning_model": True,
    "enable_flash_late_interaction": True,
    "renderer_num_workers": 1, "limit_mm_per_prompt": {}, "media_io_kwargs": {},
    "mm_processor_kwargs": None, "interleave_mm_strings": False, "allowed_media_domains": None,
    "default_mm_loras": None,
}  # fmt: skip

#: The engine's (or its supervisor's) business: nothing for the frontend to do.
_ENGINE = """
fail_on_environ_validation gdn_prefill_backend kda_prefill_backend kda_decode_backend
data_parallel_supervisor_port dp_supervisor_probe_interval_s dp_supervisor_probe_timeout_s
dp_supervisor_probe_failure_threshold
trust_remote_code dtype seed code_revision max_model_len quantization quantization_config
allow_deprecated_quantization enforce_eager logprobs_mode use_fp64_gumbel disable_sliding_window
disable_cascade_attn config_format model_class_overrides pooler_config enable_sleep_mode
sleep_mode_offload_cudagraph sleep_preserve_parameter_names enable_cumem_allocator enable_nccl_comm_suspend
model_impl
load_format safetensors_load_strategy safetensors_prefetch_num_threads safetensors_prefetch_block_size
model_loader_extra_config ignore_patterns use_tqdm_on_load pt_load_map_location
attention_backend mamba_backend mamba_ssu_algorithm enable_mamba_cache_stochastic_rounding
mamba_cache_philox_rounds
distributed_executor_backend pipeline_parallel_size master_addr master_port nnodes node_rank
distributed_timeout_seconds cpu_distributed_timeout_seconds numa_bind numa_bind_nodes numa_bind_cpus
device_ids tensor_parallel_size decode_context_parallel_size dcp_comm_backend dcp_q_replicate
dcp_kv_cache_interleave_size cp_kv_cache_interleave_size prefill_context_parallel_size
data_parallel_rank data_parallel_start_rank data_parallel_address
data_parallel_rpc_port data_parallel_backend data_parallel_hybrid_lb data_parallel_external_lb
enable_hc_sp enable_expert_parallel enable_batch_sharded_sampling enable_ep_weight_filter all2all_backend
enable_dbo enable_shm_tensor_arena ubatch_size elastic_ep_max_dp_size dbo_decode_token_threshold
dp_sync_interval dbo_prefill_token_threshold disable_nccl_for_dp_synchronization enable_eplb eplb_config
expert_placement_strategy max_parallel_loading_workers ray_workers_use_nsight disable_custom_all_reduce
worker_cls worker_extension_cls fault_tolerance_config
block_size gpu_memory_utilization kv_cache_memory_bytes kv_cache_dtype num_gpu_blocks_override
enable_prefix_caching prefix_caching_hash_algo prefix_cache_retention_interval kv_cache_dtype_skip_layers
kv_sharing_fast_prefill swa_bounded_replay mamba_cache_dtype mamba_ssm_cache_dtype mamba_block_size
prefix_match_unit mamba_cache_mode enable_mamba_shared_prefix_checkpoint replayssm_buffer_len use_replayssm
kv_offloading_size kv_offloading_backend
offload_backend cpu_offload_gb cpu_offload_params offload_group_size offload_num_in_group
offload_prefetch_step offload_params
language_model_only mm_processor_cache_gb mm_processor_cache_type mm_hasher_algorithm
mm_shm_cache_max_object_size_mb mm_encoder_only mm_encoder_tp_mode mm_encoder_attn_backend
mm_encoder_attn_dtype mm_encoder_fp8_scale_path mm_encoder_fp8_scale_save_path
mm_encoder_fp8_scale_save_margin skip_mm_profiling video_pruning_rate video_pruning_method mm_tensor_ipc
mm_processor_device mm_ipc_gpu_memory_gb mm_device_do_normalize
enable_lora max_loras max_lora_rank lora_dtype enable_tower_connector_lora max_cpu_loras fully_sharded_loras
lora_target_modules specialize_active_lora enable_mixed_moe_lora_format enable_moe_shared_loras
max_lora_cls_labels
collect_detailed_traces per_request_spec_decode_metrics kv_cache_metrics kv_cache_metrics_sample
cudagraph_metrics enable_layerwise_nvtx_tracing enable_mfu_metrics
enable_logging_iteration_details jit_monitor_mode jit_monitor_verbose
max_num_batched_tokens max_num_scheduled_tokens max_num_seqs max_num_active_seqs max_num_queued_reqs
max_num_queued_tokens long_prefill_token_threshold long_prefill_token_threshold_adaptive scheduling_policy
enable_chunked_prefill disable_chunked_mm_input scheduler_cls scheduler_reserve_full_isl watermark
prefill_schedule_interval disable_hybrid_kv_cache_manager async_scheduling
cudagraph_capture_sizes max_cudagraph_capture_size
ir_op_priority enable_flashinfer_autotune moe_backend linear_backend sparse_indexer_topk_backend
speculative_config spec_method spec_model spec_tokens kv_transfer_config kv_events_config ec_transfer_config
ec_manager_config compilation_config attention_config engram_config kernel_config additional_config
optimization_level performance_mode
""".split()


def _speculative(_value: Any) -> dict[str, Any]:
    return {"speculative_decoding": True}


#: ENGINE dests whose value the frontend must also act on (``convert`` on an ENGINE flag): with speculative
#: decoding vLLM's frontend refuses min_p and logit_bias (``SamplingParams._validate_spec_decode``).
_ENGINE_IMPLIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "speculative_config": _speculative,
    "spec_method": _speculative,
    "spec_model": _speculative,
}


def _build() -> dict[str, Flag]:
    flags = [
        *_HONOURED,
        *_REFUSED,
        *(Flag(d, Kind.IGNORED, _IGNORED_DEFAULTS[d], why=why) for d, why in _IGNORED_WHY.items()),
        *(Flag(d, Kind.ENGINE, convert=_ENGINE_IMPLIES.get(d)) for d in _ENGINE),
    ]
    table: dict[str, Flag] = {}
    for flag in flags:
        if flag.dest in table:
            raise AssertionError(f"{flag.dest} is classified twice")
        table[flag.dest] = flag
    return table


#: dest → Flag for every dest of vLLM 0.32's ``vllm serve`` parser (plus :data:`EXTRA_KEYS`).
TABLE: dict[str, Flag] = _build()


# ------------------------------------------------------------------------------------------- applying


@attrs.frozen
class Mapped:
    """What :func:`map_values` made of a dest → value mapping."""

    #: FrontendConfig keyword arguments (``model`` / ``tokenizer`` as given: strings)
    fields: dict[str, Any]
    #: one line per refused key, e.g. ``--tool-parser-plugin (tool parser plugins are not supported)``
    refused: list[str]
    #: keys not in :data:`TABLE`
    unknown: list[str]
    #: IGNORED keys set to something other than vLLM's default
    ignored: list[str]


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def map_values(values: Mapping[str, Any], environ: Mapping[str, str]) -> Mapped:
    """Apply :data:`TABLE` to *values* (dest → value, args-JSON or argparse form).

    Never raises for a bad value: a value a converter cannot take is reported in ``refused`` with the
    converter's message. ``api_keys`` falls back to ``VLLM_API_KEY`` in *environ* as vLLM's does
    (``args.api_key or [envs.VLLM_API_KEY]``, empty keys dropped); ``model`` falls back to the ``model``
    dest when ``model_tag`` is absent (RustFrontendProcessManager's fallback).
    """
    fields: dict[str, Any] = {}
    refused: list[str] = []
    unknown: list[str] = []
    ignored: list[str] = []
    for key in sorted(values):
        value = values[key]
        flag = TABLE.get(key)
        if flag is None:
            unknown.append(key)
            continue
        if flag.kind is Kind.ENGINE:
            if flag.convert is not None and value is not None:  # the frontend must know of it too
                fields.update(flag.convert(value))
            continue
        if flag.kind is Kind.IGNORED:
            if not flag.is_default(value):
                ignored.append(key)
            continue
        if flag.kind is Kind.REFUSED:
            if not flag.is_default(value) and not (flag.ok is not None and flag.ok(value)):
                shown = "" if key in _SECRET else f" {_show(value)}" if flag.ok is not None else ""
                refused.append(f"{flag.option}{shown} ({flag.why})")
            continue
        assert flag.convert is not None
        try:
            fields.update(flag.convert(value))
        except Refused as exc:
            refused.append(f"{flag.option} ({exc})")
        except ValueError as exc:  # also json.JSONDecodeError
            refused.append(f"{flag.option} (bad value: {exc})")
    if "model" not in fields and isinstance(values.get("model"), str):
        fields["model"] = values["model"]
    if "api_keys" not in fields and environ.get("VLLM_API_KEY"):
        fields["api_keys"] = (environ["VLLM_API_KEY"],)
    return Mapped(fields, refused, unknown, ignored)


_SECRET = frozenset({"api_key", "hf_token", "watermark_config"})


def counts() -> dict[str, int]:
    """How many dests of each kind the table has (for the README and the report)."""
    result = {kind.value: 0 for kind in Kind}
    for flag in TABLE.values():
        result[flag.kind.value] += 1
    return result
