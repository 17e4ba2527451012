"""A mock vLLM 0.32 engine core: the engine side of the ZeroMQ protocol, for tests and benchmarks.

It handshakes like ``vllm serve --headless``, schedules like the engine (FIFO, ``max_num_seqs``, one
token per running request per step, one output message per client per step), answers the utility calls
vLLM's frontends make, and reproduces the engine's hazards (engine_protocol.md §12) — recording each as
a ``"hazard"`` event — so that both trio-front and vLLM's own Python frontend run against it.

Tokens are deterministic (see :mod:`.rules` for the exact formulas): :func:`mock_token` predicts every
ordinary token, ``seed = EOS_SEED_BASE + K`` makes a request emit EOS after K tokens, and
:func:`expected_output` gives the whole output of a request.

In a test::

    cfg = MockEngineConfig("tcp://127.0.0.1:PORT", step_ms=1)
    engine = await nursery.start(run_mock_engine, cfg)   # or: await nursery.start(MockEngine(cfg).run)
    ...
    await engine.log.wait_for("abort", request_id=rid)
    engine.die()  /  engine.wedge()

With ``MockEngineConfig(script=FILE)`` prompts that match a rule of the JSON script get the scripted
output (then EOS) instead — realistic model text for parser tests; see :mod:`.script` for the format.

From a shell: ``trio-front mock-engine --engine-addr tcp://127.0.0.1:PORT`` (see ``trio_front.cli``).
"""

from .core import MockCore, MockEngineConfig, PauseState
from .engine import MockEngine, run_mock_engine
from .events import EventLog
from .rules import (
    EOS_SEED_BASE,
    FIRST_ORDINARY_ID,
    Expected,
    Generation,
    eos_seed,
    expected_output,
    logprob_row,
    mock_token,
)
from .script import Script, ScriptError, load_script, parse_script

__all__ = [
    "EOS_SEED_BASE",
    "FIRST_ORDINARY_ID",
    "EventLog",
    "Expected",
    "Generation",
    "MockCore",
    "MockEngine",
    "MockEngineConfig",
    "PauseState",
    "Script",
    "ScriptError",
    "eos_seed",
    "expected_output",
    "load_script",
    "logprob_row",
    "mock_token",
    "parse_script",
    "run_mock_engine",
]
