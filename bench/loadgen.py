"""The harness's load generator: one lean trio process for every frontend and workload.

Run as ``python bench/loadgen.py SPEC.json OUT.json`` (``bench/run.py`` does this, one process per
workload). SPEC is a :class:`LoadSpec` as JSON. The result JSON has the workload's figures plus, for each
process tree named in ``watch``, its CPU-seconds and RSS over the measured phase (read from /proc here,
at the exact start and end of the phase), the machine's busy CPU-seconds, and the generator's own CPU.

Kinds of load:

* ``stream`` (W1, W2): ``num_requests`` streaming completions, ``concurrency`` at a time over pre-opened
  keep-alive connections, after ``warmup_requests`` of the same shape with other prompts. Records TTFT
  (first content event), gaps between content events (ITL), TPOT, end-to-end latency, output tokens
  (from the usage chunk).
* ``cancel`` (W3): like ``stream``, but each request's socket is closed after a random 1..
  ``close_after_max`` content events; records the close instant (``time.monotonic()``, the mock engine's
  clock) and the response id so the harness can match it with the engine's ABORT.
* ``slow`` (W4): ``concurrency`` streams whose client reads ``read_bytes`` every ``read_interval_s``
  through a small ``SO_RCVBUF``, for ``duration_s``; RSS of the watched trees every ``sample_interval_s``.
* ``idle`` (W5): one long "blocker" stream, then idle streams opened in ``levels`` (their requests
  wait in an engine with ``max_num_seqs=1``); RSS at each level, then after closing them.

Prompts are token ids (``"prompt": [ids]``), uniform in ``[4, vocab)``, from ``seed``: token-exact and
identical for every frontend; or (``prompt_kind``) text or chat messages built from such ids (W1t, W6).
Every request has ``stream``, ``ignore_eos``, ``temperature 0``, a fixed
``max_tokens`` and ``stream_options.include_usage``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procstat, stats
from bench.httpclient import Connection, ProtocolError, SSEParser, connect, get_json, request_head
from bench.reactor import Reactor, Rec, consume

FIRST_ORDINARY_ID = 4
_NET_ERRORS = (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError)


@dataclass
class LoadSpec:
    """What to run; every field has a default so a spec file names only what differs."""

    kind: str = "stream"  # stream | cancel | slow | idle
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # None: the first id of GET /v1/models
    path: str = "/v1/completions"
    prompt_len: int = 32
    max_tokens: int = 128
    num_requests: int = 256
    concurrency: int = 64
    seed: int = 1
    vocab: int = 4096
    warmup_requests: int = 0
    warmup_concurrency: int | None = None
    close_after_max: int = 16  # cancel
    duration_s: float = 20.0  # slow
    read_bytes: int = 4  # slow
    read_interval_s: float = 0.5  # slow
    rcvbuf: int = 4096  # slow
    levels: list[int] = field(default_factory=lambda: [64, 128, 256])  # idle
    settle_s: float = 1.5  # idle
    blocker_max_tokens: int = 2000  # idle
    sample_interval_s: float = 0.5
    request_timeout_s: float = 300.0
    phase_timeout_s: float = 900.0
    connect_parallel: int = 64
    #: stream: also return every finished request's ``xid``, send time and TTFT (``records``), for
    #: splitting TTFT at the engine's receipt of the request (``enginelog.ttft_split``).
    records: bool = False
    watch: dict[str, int] = field(default_factory=dict)  # name -> root pid of a process tree
    tag: str = "bx"  # X-Request-Id prefix
    #: ``ids``: ``"prompt": [token ids]``; ``text``: ``"prompt": "<text>"`` of ``prompt_len`` tokens;
    #: ``chat``: ``"messages"`` of ``turns`` user/assistant pairs (``prompt_len`` content tokens in all),
    #: posted to ``/v1/chat/completions``.
    prompt_kind: str = "ids"
    turns: int = 4
    tokenizer_dir: str | None = None  # text/chat: the model directory whose tokenizer.json builds the text


# ---------------------------------------------------------------------------------------------- payloads


class TextMaker:
    """Text of about ``n`` tokens from seeded random ids, as ``vllm bench serve``'s random dataset makes it:
    decode random ids, re-encode, cut to ``n`` ids, decode again (so the text re-encodes to ~``n``)."""

    def __init__(self, model_dir: str, vocab: int) -> None:
        import tokenizers  # the frontend venv has it; only text/chat workloads need it

        self.tok = tokenizers.Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.vocab = min(vocab, self.tok.get_vocab_size(with_added_tokens=False))

    def text(self, rng: random.Random, n: int) -> str:
        ids = [rng.randrange(FIRST_ORDINARY_ID, self.vocab) for _ in range(n)]
        again = self.tok.encode(self.tok.decode(ids), add_special_tokens=False).ids[:n]
        return self.tok.decode(again)


def _prompt_fields(spec: LoadSpec, rng: random.Random, maker: TextMaker | None) -> dict[str, Any]:
    if spec.prompt_kind == "ids":
        return {"prompt": [rng.randrange(FIRST_ORDINARY_ID, spec.vocab) for _ in range(spec.prompt_len)]}
    assert maker is not None
    if spec.prompt_kind == "text":
        return {"prompt": maker.text(rng, spec.prompt_len)}
    if spec.prompt_kind == "chat":
        n_msgs = 2 * spec.turns - 1  # user, assistant, ..., user
        per = max(1, spec.prompt_len // n_msgs)
        roles = ["user" if k % 2 == 0 else "assistant" for k in range(n_msgs)]
        return {"messages": [{"role": r, "content": maker.text(rng, per)} for r in roles]}
    raise ValueError(f"unknown prompt_kind {spec.prompt_kind!r}")


def make_payloads(spec: LoadSpec, model: str, n: int, seed: int, tag: str) -> tuple[list[bytes], list[str]]:
    """``n`` ready-to-send requests (head + body) and their X-Request-Id values."""
    rng = random.Random(seed)
    maker = TextMaker(spec.tokenizer_dir or "", spec.vocab) if spec.prompt_kind != "ids" else None
    out, xids = [], []
    for i in range(n):
        body = json.dumps(
            {
                "model": model,
                **_prompt_fields(spec, rng, maker),
                "max_tokens": spec.max_tokens,
                "stream": True,
                "temperature": 0.0,
                "ignore_eos": True,
                "stream_options": {"include_usage": True},
            },
            separators=(",", ":"),
        ).encode()
        xid = f"{tag}{i:06d}"
        head = request_head("POST", spec.host, spec.port, spec.path, len(body), f"X-Request-Id: {xid}\r\n")
        out.append(head + body)
        xids.append(xid)
    return out, xids


# ---------------------------------------------------------------------------------------------- requests


async def do_request(conn: Connection, payload: bytes, rec: Rec, gaps: list[float], close_after: int) -> bool:
    """Send one request and consume its stream; returns whether the connection can be reused."""
    rec.start = time.monotonic()
    await conn.send(payload)
    resp = await conn.read_head()
    rec.head = True
    if resp.status != 200:
        body = await conn.read_all(resp)
        rec.error = f"HTTP {resp.status}: {body[:200].decode(errors='replace')}"
        rec.end = time.monotonic()
        return resp.keep_alive
    sse = SSEParser()
    for _ in range(10_000_000):
        data = await conn.read_body(resp)
        if data is None:
            break
        if data and consume(rec, sse.feed(data), time.monotonic(), gaps, close_after):
            rec.close_t = time.monotonic()
            await conn.aclose()
            rec.end = rec.close_t
            return False
    rec.end = time.monotonic()
    if not rec.done and rec.error is None:
        rec.error = "stream ended without [DONE]"
    return resp.keep_alive and resp.done


# ---------------------------------------------------------------------------------------------- watching


class Watch:
    """CPU/RSS snapshots of the named process trees, plus machine and self CPU."""

    def __init__(self, watch: dict[str, int]) -> None:
        self.watch = watch

    def snap(self) -> dict[str, Any]:
        return {
            "trees": {name: procstat.snapshot(pid) for name, pid in self.watch.items()},
            "machine": procstat.machine_busy_seconds(),
            "self": procstat.self_cpu_seconds(),
            "t": time.monotonic(),
        }

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        trees = {}
        for name, sb in b["trees"].items():
            sa = a["trees"][name]
            trees[name] = {
                "cpu_s": round(sb.cpu_since(sa), 3),
                "cpu_by_process": sb.cpu_by_name_since(sa),
                "rss_mb_before": round(sa.rss / 2**20, 1),
                "rss_mb_after": round(sb.rss / 2**20, 1),
                "pids": len(sb.cpu),
            }
        return {
            "wall_s": round(b["t"] - a["t"], 3),
            "trees": trees,
            "machine_busy_s": round(b["machine"] - a["machine"], 3),
            "client_cpu_s": round(b["self"] - a["self"], 3),
        }

    def rss_mb(self, pid_cache: dict[str, list[int]]) -> dict[str, float]:
        return {name: round(procstat.rss_bytes(pids) / 2**20, 2) for name, pids in pid_cache.items()}

    def pids(self) -> dict[str, list[int]]:
        return {name: procstat.tree_pids(pid) for name, pid in self.watch.items()}


# ---------------------------------------------------------------------------------------------- workloads


def summarize(recs: list[Rec], gaps: list[float], wall: float, max_tokens: int) -> dict[str, Any]:
    ok = [r for r in recs if r.error is None and r.ttft is not None]
    errors: dict[str, int] = {}
    for r in recs:
        if r.error is not None:
            key = r.error[:120]
            errors[key] = errors.get(key, 0) + 1
    tokens = [r.tokens if r.tokens is not None else r.n_events for r in ok]
    tpot = [
        (r.end - r.start - r.ttft) / (t - 1)
        for r, t in zip(ok, tokens, strict=True)
        if t > 1 and r.end is not None
    ]
    return {
        "requests": len(recs),
        "ok": len(ok),
        "failed": len(recs) - len(ok),
        "errors": errors,
        "usage_missing": sum(1 for r in ok if r.tokens is None),
        "wrong_token_count": sum(1 for t in tokens if t != max_tokens),
        "output_tokens": sum(tokens),
        "content_events": sum(r.n_events for r in ok),
        "duration_s": round(wall, 3),
        "req_per_s": round(len(ok) / wall, 2) if wall > 0 else None,
        "output_tok_per_s": round(sum(tokens) / wall, 1) if wall > 0 else None,
        "ttft_ms": stats.summary((r.ttft for r in ok), 1000.0),
        "itl_ms": stats.summary(gaps, 1000.0),
        "tpot_ms": stats.summary(tpot, 1000.0),
        "e2e_ms": stats.summary((r.end - r.start for r in ok if r.end is not None), 1000.0),
        "ttft_samples_ms": sorted(round(r.ttft * 1000.0, 2) for r in ok),
        "itl_cdf_ms": stats.cdf_points(gaps, 1000.0),
    }


async def run_requests(
    spec: LoadSpec,
    payloads: list[bytes],
    recs: list[Rec],
    concurrency: int,
    close_after: list[int] | None = None,
    preconnect: bool = False,
) -> dict[str, Any]:
    """Run *payloads* through a :class:`Reactor`; gaps between token events and connection stats."""
    reactor = Reactor(
        spec.host, spec.port, payloads, recs, close_after=close_after,
        request_timeout=spec.request_timeout_s, connect_parallel=spec.connect_parallel,
    )  # fmt: skip
    try:
        pre = await reactor.preconnect(min(concurrency, len(payloads))) if preconnect else 0
        ok = await reactor.run(concurrency, spec.phase_timeout_s)
    finally:
        reactor.close()
    return {"gaps": reactor.gaps, "timed_out": not ok, "preconnected": pre, **reactor.stats()}


async def run_stream(spec: LoadSpec, model: str, watch: Watch) -> dict[str, Any]:
    """W1/W2 (and W3 with ``kind == "cancel"``): warm-up, pre-connect, then the measured phase."""
    warm_failed = 0
    if spec.warmup_requests:
        wp, wx = make_payloads(spec, model, spec.warmup_requests, spec.seed + 10_000, spec.tag + "w")
        wrecs = [Rec(x) for x in wx]
        await run_requests(spec, wp, wrecs, min(spec.warmup_concurrency or spec.concurrency, len(wp)))
        warm_failed = sum(1 for r in wrecs if r.error is not None)
    payloads, xids = make_payloads(spec, model, spec.num_requests, spec.seed, spec.tag)
    recs = [Rec(x) for x in xids]
    close_after = None
    if spec.kind == "cancel":
        rng = random.Random(spec.seed + 20_000)
        close_after = [rng.randint(1, spec.close_after_max) for _ in recs]
    reactor = Reactor(
        spec.host, spec.port, payloads, recs, close_after=close_after,
        request_timeout=spec.request_timeout_s, connect_parallel=spec.connect_parallel,
    )  # fmt: skip
    try:
        pre = await reactor.preconnect(min(spec.concurrency, spec.num_requests))
        before = watch.snap()
        finished = await reactor.run(spec.concurrency, spec.phase_timeout_s)
        after = watch.snap()
    finally:
        reactor.close()
    res = summarize(recs, reactor.gaps, after["t"] - before["t"], spec.max_tokens)
    res.update(
        warmup_failed=warm_failed,
        phase_timed_out=not finished,
        preconnected=pre,
        measure=Watch.delta(before, after),
        **reactor.stats(),
    )
    if spec.records or spec.kind == "cancel":  # both are matched against the engine's event log
        res["phase_start_t"], res["phase_end_t"] = before["t"], after["t"]
    if spec.records:
        res["records"] = [[r.xid, r.start, r.ttft] for r in recs if r.error is None and r.ttft is not None]
    if spec.kind == "cancel":
        res["closed"] = [
            {
                "xid": r.xid,
                "id": r.chunk_id,
                "close_t": r.close_t,
                "after": close_after[i] if close_after else 0,
            }
            for i, r in enumerate(recs)
            if r.close_t is not None
        ]
        res["completed_before_close"] = sum(1 for r in recs if r.close_t is None and r.done)
    return res


async def run_slow(spec: LoadSpec, model: str, watch: Watch) -> dict[str, Any]:
    """W4: slow readers; RSS of the watched trees over time, during and after."""
    payloads, _ = make_payloads(spec, model, spec.concurrency, spec.seed, spec.tag)
    got = [0] * len(payloads)
    eof = 0
    opened = 0
    samples: list[dict[str, Any]] = []
    if spec.warmup_requests:  # short requests first, so lazy start-up allocations are not counted
        wspec = LoadSpec(**{**asdict(spec), "max_tokens": 16})
        wp, wx = make_payloads(wspec, model, spec.warmup_requests, spec.seed + 10_000, spec.tag + "w")
        await run_requests(spec, wp, [Rec(x) for x in wx], min(32, len(wp)))
        await trio.sleep(1.0)
    pid_cache = watch.pids()
    t0 = time.monotonic()

    async def reader(i: int) -> None:
        nonlocal eof, opened
        try:
            stream = await connect(spec.host, spec.port, rcvbuf=spec.rcvbuf)
        except (OSError, trio.TooSlowError):
            return
        try:
            await stream.send_all(payloads[i])
            opened += 1
            for _ in range(int(spec.duration_s / spec.read_interval_s) + 10):
                data = await stream.receive_some(spec.read_bytes)
                if not data:
                    eof += 1
                    return
                got[i] += len(data)
                await trio.sleep(spec.read_interval_s)
        except _NET_ERRORS:
            return
        finally:
            stream.socket.close()  # synchronous: also runs when cancelled

    async def sampler(label: str, count: int) -> None:
        for _ in range(count):
            samples.append(
                {"t": round(time.monotonic() - t0, 2), "phase": label, "rss_mb": watch.rss_mb(pid_cache)}
            )
            await trio.sleep(spec.sample_interval_s)

    before = watch.snap()
    with trio.move_on_after(spec.duration_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler, "hold", int(spec.duration_s / spec.sample_interval_s) + 10)
            for i in range(len(payloads)):
                nursery.start_soon(reader, i)
    after = watch.snap()
    await sampler("closed", int(5.0 / spec.sample_interval_s))
    res: dict[str, Any] = {
        "streams_opened": opened,
        "streams_eof_early": eof,
        "bytes_read_total": sum(got),
        "samples": samples,
        "phase_start_t": before["t"],
        "phase_end_t": after["t"],
        "measure": Watch.delta(before, after),
    }
    for name in pid_cache:
        hold = [s["rss_mb"][name] for s in samples if s["phase"] == "hold"]
        closed = [s["rss_mb"][name] for s in samples if s["phase"] == "closed"]
        last = hold[len(hold) * 2 // 3 :]
        sl = stats.slope(list(range(len(last))), last) if len(last) > 1 else None
        growth = (max(hold) - hold[0]) if hold else None
        res[name] = {
            "rss_mb_start": hold[0] if hold else None,
            "rss_mb_peak": max(hold) if hold else None,
            "rss_mb_end_hold": hold[-1] if hold else None,
            "rss_mb_after_close": closed[-1] if closed else None,
            "growth_mb": round(growth, 2) if growth is not None else None,
            "growth_kib_per_stream": round(growth * 1024 / max(1, opened), 1) if growth is not None else None,
            "rss_mb_per_s_last_third": round(sl / spec.sample_interval_s, 3) if sl is not None else None,
        }
    return res


async def run_idle(spec: LoadSpec, model: str, watch: Watch) -> dict[str, Any]:
    """W5: RSS of the watched trees as idle streams (queued behind one blocker) are opened."""
    blk_spec = LoadSpec(**{**asdict(spec), "max_tokens": spec.blocker_max_tokens})
    (blocker_payload,), _ = make_payloads(blk_spec, model, 1, spec.seed + 30_000, spec.tag + "blk")
    payloads, _ = make_payloads(spec, model, max(spec.levels), spec.seed, spec.tag)
    blocker = Rec("blocker")
    pid_cache = watch.pids()
    levels: list[dict[str, Any]] = []
    idle: list[trio.SocketStream] = []
    open_failed = 0

    async def run_blocker() -> None:
        try:
            conn = Connection(await connect(spec.host, spec.port))
            await do_request(conn, blocker_payload, blocker, [], 0)
            await conn.aclose()
        except _NET_ERRORS as exc:
            blocker.error = repr(exc)

    async def open_one(i: int, limiter: trio.CapacityLimiter) -> None:
        nonlocal open_failed
        async with limiter:
            try:
                stream = await connect(spec.host, spec.port)
                await stream.send_all(payloads[i])
                idle.append(stream)
            except (*_NET_ERRORS, trio.TooSlowError):
                open_failed += 1

    def sample() -> dict[str, float]:
        return watch.rss_mb(pid_cache)

    async def level_rss() -> dict[str, float]:
        await trio.sleep(spec.settle_s)
        rows = []
        for _ in range(3):
            rows.append(sample())
            await trio.sleep(0.3)
        return {name: stats.median([r[name] for r in rows]) or 0.0 for name in pid_cache}

    before = watch.snap()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_blocker)
        for _ in range(1200):  # up to 60 s for the blocker's first token
            if blocker.n_events or blocker.error is not None:
                break
            await trio.sleep(0.05)
        levels.append({"streams": 0, "rss_mb": await level_rss()})
        limiter = trio.CapacityLimiter(spec.connect_parallel)
        for level in sorted(spec.levels):
            t_open = time.monotonic()
            async with trio.open_nursery() as opener:
                for i in range(len(idle) + open_failed, level):
                    opener.start_soon(open_one, i, limiter)
            levels.append(
                {
                    "streams": len(idle),
                    "open_s": round(time.monotonic() - t_open, 2),
                    "rss_mb": await level_rss(),
                    "blocker_events": blocker.n_events,
                }
            )
        blocker_alive = blocker.end is None
        for s in idle:
            s.socket.close()
        after_close = await level_rss()
        nursery.cancel_scope.cancel()
    after = watch.snap()
    res: dict[str, Any] = {
        "levels": levels,
        "open_failed": open_failed,
        "blocker_alive_at_end": blocker_alive,
        "blocker_error": blocker.error,
        "rss_mb_after_close": after_close,
        "measure": Watch.delta(before, after),
        "phase_start_t": before["t"],
        "phase_end_t": after["t"],
    }
    for name in pid_cache:
        xs = [lv["streams"] for lv in levels]
        ys = [lv["rss_mb"][name] * 2**20 for lv in levels]
        sl = stats.slope(xs, ys)
        res[name] = {"rss_bytes_per_stream": round(sl) if sl is not None else None}
    return res


async def amain(spec: LoadSpec) -> dict[str, Any]:
    model = spec.model
    if model is None:
        model = (await get_json(spec.host, spec.port, "/v1/models"))["data"][0]["id"]
    watch = Watch(spec.watch)
    runner = {"stream": run_stream, "cancel": run_stream, "slow": run_slow, "idle": run_idle}[spec.kind]
    with trio.fail_after(spec.phase_timeout_s * 2 + 120):
        res = await runner(spec, model, watch)
    res["model"] = model
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: loadgen.py SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = LoadSpec(**json.loads(Path(argv[0]).read_text()))
    res = trio.run(amain, spec)
    res["spec"] = asdict(spec)
    res["client_process_cpu_s"] = round(procstat.self_cpu_seconds(), 3)
    Path(argv[1]).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
