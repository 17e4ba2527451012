"""LoRA adapters: vLLM's ``--lora-modules`` syntax and the registry of adapters the engine accepted.

Contract (vLLM 0.32's ``OpenAIServingModels``, ``vllm/entrypoints/openai/models/serving.py``):

* an adapter is registered only after the engine's ``add_lora`` utility succeeded for it. A request that
  carries a :class:`wire.LoRARequest` the engine cannot load **kills the engine** (it loads adapters lazily
  inside a model step), so :meth:`LoRARegistry.resolve` only ever hands out accepted ones, always with
  ``load_inplace=False`` (true would reload the adapter for every request);
* ids count from 1 and a name keeps its id when reloaded in place (``load_inplace``), as in vLLM;
* ``--lora-modules`` adapters are loaded once the engine is ready (:meth:`LoRARegistry.load_static`); any
  failure there is a start-up failure; until then their names answer 503, not 404;
* unloading only forgets the name (see :meth:`LoRARegistry.unload` for why the engine is not told).

Cancellation: a load cancelled while the engine works on ``add_lora`` leaves the registry as it was (the
late reply is dropped; the engine may keep the adapter in its LRU cache, which is harmless). Loads of one
name are serialized by a per-name lock, like vLLM's.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import msgspec
import trio

from trio_front.engine import wire
from trio_front.engine.client import EngineClient, EngineError, UtilityCallError

log = logging.getLogger("trio_front.lora")

#: vLLM's ``LoRAAdapterNotFoundError`` text; an ``add_lora`` failure containing it is a 404.
NOT_FOUND = "Loading lora {name} failed: No adapter found for {path}"
#: How long ``add_lora`` may take (it reads the adapter from disk, or downloads it from the HF hub).
ADD_TIMEOUT = 300.0


@attrs.frozen
class LoRAModule:
    """One ``--lora-modules`` entry (vLLM's ``LoRAModulePath``)."""

    name: str
    path: str
    base_model_name: str | None = None
    is_3d_lora_weight: bool = False


def parse_lora_modules(values: Iterable[str]) -> list[LoRAModule]:
    """vLLM's ``LoRAParserAction``: ``name=path`` (when the item has ``=`` and no ``,``), else a JSON object
    with ``name``, ``path`` and optionally ``base_model_name``, ``is_3d_lora_weight``. Empty items are
    skipped. Raises ValueError naming ``--lora-modules``; also for what vLLM would only reject while
    loading at start-up (an empty name or path, a name given twice)."""
    modules: list[LoRAModule] = []
    for item in values:
        if not item:
            continue
        if "=" in item and "," not in item:
            name, path = item.split("=", 1)
            module = LoRAModule(name, path)
        else:
            try:
                data = json.loads(item)
            except json.JSONDecodeError:
                raise ValueError(f"Invalid JSON format for --lora-modules: {item}") from None
            module = _module_from_json(item, data)
        if not module.name or not module.path:
            raise ValueError(f"--lora-modules {item!r}: both a name and a path must be given")
        if any(m.name == module.name for m in modules):
            raise ValueError(f"--lora-modules names the adapter {module.name!r} twice")
        modules.append(module)
    return modules


def _module_from_json(item: str, data: Any) -> LoRAModule:
    fields = {"name": str, "path": str, "base_model_name": (str, type(None)), "is_3d_lora_weight": bool}
    if not isinstance(data, dict):
        raise ValueError(f"Invalid fields for --lora-modules: {item} - expected a JSON object")
    unknown = sorted(set(data) - set(fields))
    missing = [key for key in ("name", "path") if key not in data]
    if unknown or missing:
        problem = f"unknown field(s) {unknown}" if unknown else f"missing field(s) {missing}"
        raise ValueError(f"Invalid fields for --lora-modules: {item} - {problem}")
    for key, kind in fields.items():
        if key in data and not isinstance(data[key], kind):
            raise ValueError(f"Invalid fields for --lora-modules: {item} - {key} has the wrong type")
    return LoRAModule(**data)


class LoRAError(Exception):
    """A load/unload the registry refuses: vLLM's status, error type and message."""

    def __init__(self, status: int, message: str, type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type


class StaticLoadError(Exception):
    """A ``--lora-modules`` adapter could not be loaded: the server must not start."""


def sanitize_message(message: str) -> str:
    """vLLM's ``sanitize_message`` (error bodies): no memory addresses, tracebacks or file paths."""
    message = re.sub(r" at 0x[0-9a-fA-F]+>", ">", message)
    message = re.sub(r'\n?\s*File "[^"]+", line \d+, in \S+(\n\s+.*)?', "", message)
    message = re.sub(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+", "<path>", message)
    message = re.sub(r"(?:/[\w\-]+)+/[\w\-]+\.\w+", "<path>", message)
    return message.strip()


@attrs.define(eq=False)
class LoRARegistry:
    """The adapters requests may name, keyed by name. ``base_names`` are the names that mean the base
    model (an adapter may not take one)."""

    engine: EngineClient
    base_names: tuple[str, ...]
    static_modules: Sequence[LoRAModule] = ()
    adapters: dict[str, wire.LoRARequest] = attrs.Factory(dict)
    #: ``--lora-modules`` names not loaded yet (requests naming them get a 503)
    pending: set[str] = attrs.field(init=False)
    _last_id: int = 0
    _locks: dict[str, trio.Lock] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.pending = {m.name for m in self.static_modules}

    # ------------------------------------------------------------------ lookups

    def resolve(self, name: str) -> wire.LoRARequest | None:
        """The engine-accepted adapter called *name*, or ``None``."""
        return self.adapters.get(name)

    def is_pending(self, name: str) -> bool:
        return name in self.pending

    def cards(self, created: int) -> list[dict[str, Any]]:
        """vLLM's ``/v1/models`` cards for the adapters (after the base model's)."""
        return [
            {
                "id": lora.lora_name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": lora.lora_path,
                "parent": lora.base_model_name or self.base_names[0],
                "max_model_len": None,
                "permission": [model_permission(created)],
            }
            for lora in self.adapters.values()
        ]

    # ------------------------------------------------------------------ changes

    async def load(
        self,
        name: str,
        path: str,
        *,
        load_inplace: bool = False,
        is_3d_lora_weight: bool = False,
        base_model_name: str | None = None,
    ) -> str:
        """vLLM's ``load_lora_adapter``: the success text, or :class:`LoRAError`."""
        lock = self._locks.setdefault(name, trio.Lock())
        async with lock:
            self.check_load(name, path, load_inplace)
            known = self.adapters.get(name)
            if known is not None:
                lora_id = known.lora_int_id
            else:
                self._last_id += 1  # consumed even if the engine refuses, as vLLM's counter
                lora_id = self._last_id
            request = wire.LoRARequest(
                lora_name=name,
                lora_int_id=lora_id,
                lora_path=path,
                # vLLM keeps base_model_name only when it names a served base model
                base_model_name=base_model_name if base_model_name in self.base_names else None,
                load_inplace=load_inplace,
                is_3d_lora_weight=is_3d_lora_weight,
            )
            try:
                await self.engine.call_utility("add_lora", request, timeout=ADD_TIMEOUT)
            except UtilityCallError as exc:
                not_found = NOT_FOUND.format(name=name, path=path)
                if not_found in str(exc):
                    raise LoRAError(404, sanitize_message(not_found), "NotFoundError") from None
                raise LoRAError(500, sanitize_message(str(exc)), "InternalServerError") from None
            except EngineError as exc:  # dead, closed or not ready yet: nothing was loaded
                raise LoRAError(503, f"the engine is unavailable: {exc}", "ServiceUnavailableError") from None
            if known is not None and known.lora_path == path:
                log.warning(
                    "Reloaded LoRA adapter '%s' in place from the same path '%s'. Prefix-cache blocks "
                    "computed with its previous weights are not invalidated; load changed weights from a "
                    "new path to avoid reusing them.",
                    name,
                    path,
                )
            # Requests never carry load_inplace: it would make the engine reload the adapter every step.
            self.adapters[name] = msgspec.structs.replace(request, load_inplace=False)
            log.info("Loaded new LoRA adapter: name '%s', path '%s'", name, path)
            return f"Success: LoRA adapter '{name}' added successfully."

    def check_load(self, name: str, path: str, load_inplace: bool) -> None:
        if not name or not path:
            raise LoRAError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.base_names:
            raise LoRAError(
                400, f"The lora adapter '{name}' conflicts with a served base model.", "InvalidUserInput"
            )
        if not load_inplace and name in self.adapters:
            raise LoRAError(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in "
                "place, set 'load_inplace' to True.",
                "InvalidUserInput",
            )

    async def unload(self, name: str, lora_int_id: int | None = None) -> str:
        """vLLM's ``unload_lora_adapter``: forget *name*; the success text, or :class:`LoRAError`.

        Like vLLM 0.32 we do not call the engine's ``remove_lora``: requests already queued or running
        with this adapter still need it, and the engine would reload a removed adapter lazily from its
        path for them, inside a model step, which kills the engine if the files are gone by then (the
        usual reason to unload). The engine's LRU cache (``--max-cpu-loras``) evicts it instead, and a
        later load of the same name gets a fresh id, so stale weights are never reused.
        """
        lock = self._locks.setdefault(name, trio.Lock())
        async with lock:
            if not name:
                raise LoRAError(
                    400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput"
                )
            known = self.adapters.get(name)
            if known is None:
                raise LoRAError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            # vLLM accepts and ignores lora_int_id; we honour it as a check instead of ignoring it.
            if lora_int_id is not None and lora_int_id != known.lora_int_id:
                raise LoRAError(
                    400,
                    f"The lora adapter '{name}' has id {known.lora_int_id}, not {lora_int_id}.",
                    "InvalidUserInput",
                )
            del self.adapters[name]
            log.info("Removed LoRA adapter: name '%s'", name)
            return f"Success: LoRA adapter '{name}' removed successfully."

    async def load_static(self) -> None:
        """Load every ``--lora-modules`` adapter (the engine must be ready). Raises
        :class:`StaticLoadError` with the reason; the caller stops the server."""
        if not self.static_modules:
            return
        registration = self.engine.registration
        if registration is None or not registration.supports_lora:
            raise StaticLoadError(
                "--lora-modules needs LoRA support in the engine, which was started without it: start the "
                "engine with --enable-lora (and --max-lora-rank at least the adapters' rank)"
            )
        for module in self.static_modules:
            try:
                await self.load(
                    module.name,
                    module.path,
                    is_3d_lora_weight=module.is_3d_lora_weight,
                    base_model_name=module.base_model_name,
                )
            except LoRAError as exc:
                raise StaticLoadError(
                    f"--lora-modules: loading the adapter {module.name!r} from {module.path!r} failed: "
                    f"{exc.message}"
                ) from None
            self.pending.discard(module.name)


def model_permission(created: int) -> dict[str, Any]:
    """vLLM's default ``ModelPermission`` (a fresh id per card, as vLLM makes one per listing); the base
    model's card uses it too (``api/admin.py``)."""
    return {
        "id": f"modelperm-{secrets.token_hex(16)}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
