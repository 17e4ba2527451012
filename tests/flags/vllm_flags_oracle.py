"""vLLM 0.32's own ``vllm serve`` parser, for tests/flags (engine venv only).

stdin: ``{"argvs": {name: [arg, ...]}}`` (``vllm serve`` arguments, without ``serve``); stdout (last line):

* ``dests``: every dest of ``make_arg_parser`` → ``{"default": <JSON form>, "options": [...],
  "suppressed": bool}`` (a suppressed default is not in the parsed namespace, so never in an args JSON);
* ``args_json``: name → the args JSON ``RustFrontendProcessManager`` would pass for that command line:
  ``jsonify_non_default_args`` with its exclusions, ``model_tag``, and the two env-driven keys (their
  lines copied from ``vllm/v1/utils.py``; ``ServeSubcommand.cmd`` sets ``args.model = args.model_tag``
  first, which is copied too);
* ``parsed``: name → every dest's parsed value in JSON form (``_jsonify_arg_value``).
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> None:
    import vllm.envs as envs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.entrypoints.serve.utils.api_utils import _jsonify_arg_value, jsonify_non_default_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    job = json.loads(sys.stdin.read())
    parser = make_arg_parser(FlexibleArgumentParser())
    defaults = vars(parser.parse_args([]))
    dests = {}
    for action in parser._actions:
        if action.dest == "help":
            continue
        dests[action.dest] = {
            "default": _jsonify_arg_value(defaults.get(action.dest)),
            "options": list(action.option_strings),
            "suppressed": action.dest not in defaults,
        }
    args_json, parsed = {}, {}
    for name, argv in job["argvs"].items():
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
        parsed[name] = {key: _jsonify_arg_value(value) for key, value in vars(args).items()}
        if getattr(args, "model_tag", None) is not None:  # ServeSubcommand.cmd
            args.model = args.model_tag
        data = jsonify_non_default_args(
            args,
            exclude={"api_server_count", "data_parallel_rank", "data_parallel_external_lb",
                     "data_parallel_hybrid_lb"},
        )  # fmt: skip
        model_tag = getattr(args, "model_tag", None) or getattr(args, "model", None)
        if model_tag is not None:
            data["model_tag"] = model_tag
        data["engine_ready_timeout_secs"] = envs.VLLM_ENGINE_READY_TIMEOUT_S
        data["http_timeout_keep_alive"] = envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE
        args_json[name] = json.loads(json.dumps(data, sort_keys=True))
    print(json.dumps({"dests": dests, "args_json": args_json, "parsed": parsed}))


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    main()
