"""CPU-seconds and memory of process trees, read from /proc (Linux only, stdlib only).

* :func:`tree_pids` — a process and all its descendants (by scanning ``/proc/*/stat`` for parent ids;
  this kernel has no ``/proc/PID/task/TID/children``).
* :func:`cpu_seconds` — ``utime + stime`` of each live pid (field 14+15 of ``/proc/PID/stat``), in seconds.
  Children that already exited and were reaped are not counted (their time moves to the parent's
  ``cutime``), so snapshot long-lived processes, as the harness does.
* :func:`rss_bytes` — resident set size (``/proc/PID/statm`` field 2 × page size), summed.
* :func:`machine_busy_seconds` — busy CPU-seconds of the whole machine (``/proc/stat``), to tell how much
  of the machine other processes used during a run.
* :class:`TreeSnapshot` / :func:`snapshot` — all of that at one instant, and the difference of two.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _read_stat(pid: int) -> tuple[str, int, float] | None:
    """``(comm, ppid, cpu_seconds)`` of *pid*, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # comm is in parentheses and may contain spaces or parentheses: split at the last ')'.
    lp, rp = raw.find("("), raw.rfind(")")
    comm = raw[lp + 1 : rp]
    rest = raw[rp + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    ppid = int(rest[1])
    cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return comm, ppid, cpu


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def tree_pids(root: int) -> list[int]:
    """*root* and every descendant that is alive now (root first). Empty if *root* is gone."""
    parents: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _read_stat(pid)
        if st is not None:
            parents.setdefault(st[1], []).append(pid)
    if not os.path.exists(f"/proc/{root}"):
        return []
    out, todo = [], [root]
    for _ in range(100_000):  # bounded walk
        if not todo:
            break
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, tuple[str, float]]:
    """``{pid: (comm, utime+stime seconds)}`` for each pid still alive."""
    out: dict[int, tuple[str, float]] = {}
    for pid in pids:
        st = _read_stat(pid)
        if st is not None:
            out[pid] = (st[0], st[2])
    return out


def rss_bytes(pids: list[int]) -> int:
    """Summed resident set size of *pids* (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine spent not idle (all cores, since boot)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is inside user.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / CLK_TCK


@dataclass
class TreeSnapshot:
    """CPU-seconds per pid and RSS of one process tree at time ``t`` (``time.monotonic()``)."""

    root: int
    t: float
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    rss: int = 0

    @property
    def cpu_total(self) -> float:
        return sum(c for _, c in self.cpu.values())

    def cpu_since(self, earlier: TreeSnapshot) -> float:
        """CPU-seconds used between *earlier* and this snapshot by pids alive now.

        A pid that appeared in between counts from zero; one that vanished is lost (see module doc).
        """
        used = 0.0
        for pid, (_, c) in self.cpu.items():
            before = earlier.cpu.get(pid)
            used += c - (before[1] if before else 0.0)
        return used

    def cpu_by_name_since(self, earlier: TreeSnapshot) -> dict[str, float]:
        """Like :meth:`cpu_since`, grouped by process name (comm, max 15 chars)."""
        out: dict[str, float] = {}
        for pid, (comm, c) in self.cpu.items():
            before = earlier.cpu.get(pid)
            out[comm] = out.get(comm, 0.0) + c - (before[1] if before else 0.0)
        return {k: round(v, 3) for k, v in out.items()}


def snapshot(root: int, *, with_rss: bool = True) -> TreeSnapshot:
    """CPU and (optionally) RSS of *root*'s tree now."""
    pids = tree_pids(root)
    return TreeSnapshot(
        root=root,
        t=time.monotonic(),
        cpu=cpu_seconds(pids),
        rss=rss_bytes(pids) if with_rss else 0,
    )


def self_cpu_seconds() -> float:
    """CPU-seconds (user + system) of the calling process so far."""
    t = os.times()
    return t.user + t.system
