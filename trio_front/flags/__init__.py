"""vLLM 0.32's ``vllm serve`` flags, mapped once for ``trio-front run``, ``serve`` and ``frontend``.

* :mod:`.vllm_serve`: the table, every dest of vLLM's ``vllm serve`` parser classified as honoured (with a
  converter to :class:`~trio_front.server.FrontendConfig` fields), the engine's, ignored, or refused;
  :func:`~.vllm_serve.map_values` applies it to a mapping of dest → value.
* :mod:`.options`: the argparse declarations of the honoured flags for ``run`` and ``serve`` (vLLM's
  spellings, parsing and defaults), and the namespace → fields step through the same table.
* :mod:`.args_json`: the drop-in's ``--args-json`` (what vLLM's ``RustFrontendProcessManager`` passes).
"""
