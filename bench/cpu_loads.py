"""CPU loads that the elastic benches switch on and off: burner processes, real-time burners
and a cgroup CPU quota. Each has ``on()``, ``off()``, ``close()`` and a ``level`` that
``set_level`` changes while it runs (how heavy it is when on: the count of burners, the
real-time burners' busy share, the quota's CPUs); ``make_load`` builds the one a bench's
``--load`` names, and ``rt_permitted`` says whether real-time burners can run here.

- ``Burners(n)``: n forked processes that spin while on (bench/elastic_budget.py,
  bench/budget_sources_live.py);
- ``RtBurners(busy, period_ms)``: one SCHED_FIFO burner per CPU, all on the same grid of the
  monotonic clock, each holding its CPU for `busy` of every period (root);
- ``CpuQuota(cpus, period_us)``: this process's cgroup CPU quota cut to `cpus` while on (root).

Forked burners ask the kernel to end them with their parent (PR_SET_PDEATHSIG), so a bench
that dies leaves none behind.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

#: The real-time burners' SCHED_FIFO priority; a world process that must run above them
#: (bench/elastic_budget.py) takes WORLD_RT_PRIORITY.
RT_PRIORITY = 10
WORLD_RT_PRIORITY = 20


def dies_with_parent() -> bool:
    """Asks the kernel to end this forked process with its parent (PR_SET_PDEATHSIG); False
    when the parent is already gone (it died before the call)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    return os.getppid() != 1


def rt_permitted() -> bool:
    """Whether this process may make a SCHED_FIFO thread (root, or CAP_SYS_NICE with an
    RLIMIT_RTPRIO): tried on a short-lived child, so nothing here changes."""
    ctx = mp.get_context("fork")
    mine, theirs = ctx.Pipe(duplex=False)

    def probe(conn):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            conn.send(True)
        except OSError:
            conn.send(False)

    child = ctx.Process(target=probe, args=(theirs,), daemon=True)
    child.start()
    ok = bool(mine.recv()) if mine.poll(10) else False
    child.join(timeout=5)
    return ok


def _burn(go, stop) -> None:
    """A CPU burner: spin while `go` is set, until `stop`. It sleeps on `go` without a
    timeout: burners that woke to poll (all at once, every 50 ms) were themselves a load the
    CPU budget source saw while the schedule said quiet. The kernel ends it with its parent."""
    if not dies_with_parent():
        return
    x = 0
    while True:
        go.wait()
        if stop.is_set():
            return
        while go.is_set() and not stop.is_set():
            for _ in range(20000):
                x += 1


class Burners:
    """Forked burner processes switched on and off together: `n` of them spin while on
    (`level`, at most `most`; the rest stay asleep)."""

    #: what `level` counts, and whether a larger level is a heavier load
    level_name, heavier_up = "burners", True

    def __init__(self, n: int, most: int | None = None):
        ctx = mp.get_context("fork")
        self.stop = ctx.Event()
        self.gos = [ctx.Event() for _ in range(max(n, most or n))]
        self.procs = [ctx.Process(target=_burn, args=(go, self.stop), daemon=True) for go in self.gos]
        for p in self.procs:
            p.start()
        self.level, self._on = n, False

    def set_level(self, n) -> None:
        if not 0 <= int(n) <= len(self.gos):
            raise ValueError(f"burners {n} outside [0, {len(self.gos)}]")
        self.level = int(n)
        if self._on:
            self.on()

    def on(self) -> None:
        self._on = True
        for i, go in enumerate(self.gos):
            (go.set if i < self.level else go.clear)()

    def off(self) -> None:
        self._on = False
        for go in self.gos:
            go.clear()

    def close(self) -> None:
        self.stop.set()
        for go in self.gos:
            go.set()  # wakes the burners to see `stop`
        for p in self.procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()


def duty_cycle(go, stop, period_s: float, busy, hold) -> None:
    """A periodic load's loop, until `stop`: while `go` is set, from each multiple of
    `period_s` on the monotonic clock call ``hold(start, busy.value * period_s)`` (it keeps its
    resource busy for about that long from `start`), then wait for the next multiple. The same
    grid in every process, so loads on several CPUs run in phase; a late start is skipped, not
    made up in a burst."""
    while True:
        go.wait()
        if stop.is_set():
            return
        k = math.floor(time.monotonic() / period_s) + 1
        while go.is_set() and not stop.is_set():
            start = k * period_s
            now = time.monotonic()
            if start > now:
                time.sleep(start - now)
            hold(start, busy.value * period_s)
            k = max(k + 1, math.floor(time.monotonic() / period_s) + 1)


def _spin_until(start: float, seconds: float) -> None:
    end = start + seconds
    while time.monotonic() < end:
        pass


def _rt_burn(conn, cpu: int, period_s: float, busy, priority: int, go, stop) -> None:
    """A real-time burner on `cpu`: while `go` is set, spin from each multiple of `period_s`
    on the monotonic clock for `busy.value` of the period (the same grid on every CPU: the
    burners run in phase, so no core is free while they run), sleep for the rest. Sends "ok"
    or why not."""
    if not dies_with_parent():
        return
    try:
        os.sched_setaffinity(0, {cpu})
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send("ok")
    duty_cycle(go, stop, period_s, busy, _spin_until)


class RtBurners(Burners):
    """One SCHED_FIFO burner per CPU, switched on and off together (needs root or
    CAP_SYS_NICE); `level` is the busy share of each period, the same on every CPU. The
    kernel's real-time throttling (sched_rt_runtime_us, 95% by default) caps what they may
    take; the share must stay below it."""

    level_name, heavier_up = "busy share", True
    MAX_BUSY = 0.93

    def __init__(self, busy: float, period_ms: float):
        self._check(busy)
        if not 0.1 <= period_ms <= 100:
            raise SystemExit(f"error: --rt-period-ms {period_ms} must be in [0.1, 100]")
        ctx = mp.get_context("fork")
        self.stop, go = ctx.Event(), ctx.Event()
        self.gos = [go]  # one event: every burner runs while on
        self.busy = ctx.Value("d", busy, lock=False)
        self.procs, answers = [], []
        for cpu in sorted(os.sched_getaffinity(0)):
            mine, theirs = ctx.Pipe(duplex=False)
            self.procs.append(ctx.Process(target=_rt_burn, daemon=True, args=(
                theirs, cpu, period_ms * 1e-3, self.busy, RT_PRIORITY, go, self.stop)))
            self.procs[-1].start()
            answers.append(mine.recv() if mine.poll(10) else "no answer in 10 s")
        self.level, self._on = busy, False
        if any(a != "ok" for a in answers):
            self.close()
            raise SystemExit(f"error: --load rt cannot start a SCHED_FIFO burner ({answers}); "
                             "it needs root or CAP_SYS_NICE")

    def _check(self, busy: float) -> None:
        if not 0 < busy <= self.MAX_BUSY:
            raise SystemExit(f"error: --rt-busy {busy} must be in (0, {self.MAX_BUSY}]")

    def set_level(self, busy) -> None:
        self._check(float(busy))
        self.level = self.busy.value = float(busy)

    def on(self) -> None:
        self._on = True
        self.gos[0].set()


class CpuQuota:
    """This process's CPU bandwidth cut to `cpus` CPUs while on, through a cgroup of its own
    (what `docker update --cpus`, systemd's CPUQuota= or a Kubernetes limit do to a running
    policy; the elastic loop's CPU source reads the limit). A short period (4.1 ms by
    default; the kernel's smallest quota is 1 ms) spreads the cut out instead of stalling the
    process for most of a 100 ms period (the kernel's default). A period in a simple ratio to
    the control period (4 ms against 10 ms: 5 quota periods every 2 ticks) puts each
    inference at one of a few places in the quota cycle for a whole run, so whole runs come
    out lucky or unlucky (in an unlucky one every `1/4` inference under the quota took twice
    as long); 4.1 ms moves through the cycle.
    Needs root and the cgroup `cpu` controller (v1 or v2); the process goes back to its own
    cgroup, and the new one is removed, on close()."""

    level_name, heavier_up = "CPUs", False

    def __init__(self, cpus: float, period_us: int = 4100, root: str = "/sys/fs/cgroup"):
        from embodied_stack.control.elastic.budget import cgroup_cpu_dirs

        self.period_us, self._on = int(period_us), False
        self._check(cpus)
        self.level, self.quota_us = cpus, int(cpus * period_us)
        own = cgroup_cpu_dirs(Path("/proc/self/cgroup").read_text(), root)
        if not own:
            raise SystemExit(f"error: no cgroup with the cpu controller under {root}")
        home, self.version = own[0]
        mount = own[-1][0]  # the hierarchy's root
        self.home = home
        for stale in mount.glob("embodied_elastic_bench_*"):  # left by a killed run: empty
            if not Path(f"/proc/{stale.name.rsplit('_', 1)[-1]}").exists():
                try:
                    stale.rmdir()
                except OSError:
                    pass
        self.dir = mount / f"embodied_elastic_bench_{os.getpid()}"
        try:
            if self.version == "v2":
                ctl = mount / "cgroup.subtree_control"
                if "cpu" not in ctl.read_text().split():
                    ctl.write_text("+cpu")
            self.dir.mkdir(exist_ok=True)
            self._move(self.dir)
            self.off()
        except OSError as exc:
            self.close()
            raise SystemExit(f"error: cannot set a CPU quota in {self.dir} ({exc}); "
                             "--load quota needs root and the cgroup cpu controller") from exc

    def _check(self, cpus: float) -> None:
        quota_us = int(cpus * self.period_us)
        if not 0 < cpus or quota_us < 1000:
            raise SystemExit(f"error: --quota {cpus} CPUs x --quota-period-us {self.period_us} = "
                             f"{quota_us} us: the kernel needs >= 1000 us per period "
                             f"(use --quota-period-us >= {math.ceil(1000 / cpus)})"
                             if cpus > 0 else f"error: --quota {cpus} must be > 0")

    def set_level(self, cpus) -> None:
        self._check(float(cpus))
        self.level, self.quota_us = float(cpus), int(float(cpus) * self.period_us)
        if self._on:
            self.on()

    def _move(self, d: Path) -> None:
        (d / "cgroup.procs").write_text(str(os.getpid()))  # every thread of this process

    def _set(self, quota_us: int) -> None:
        if self.version == "v1":
            (self.dir / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            q = "max" if quota_us < 0 else str(quota_us)
            (self.dir / "cpu.max").write_text(f"{q} {self.period_us}")

    def on(self) -> None:
        self._on = True
        self._set(self.quota_us)

    def off(self) -> None:
        self._on = False
        self._set(-1)

    def close(self) -> None:
        try:
            if self.dir.exists():
                self.off()
                self._move(self.home)
                self.dir.rmdir()
        except OSError as exc:
            print(f"warning: could not remove {self.dir}: {exc}", file=sys.stderr)


def make_load(kind: str, burners: int = 3, quota: float = 0.25, quota_period_us: int = 4100,
              rt_busy: float = 0.65, rt_period_ms: float = 1.0,
              most_burners: int | None = None) -> Burners | CpuQuota:
    """The load `kind` names ("burners", "rt" or "quota"), built and off; burners: up to
    `most_burners` can be switched on by set_level."""
    if kind == "burners":
        return Burners(burners, most_burners)
    if kind == "rt":
        return RtBurners(rt_busy, rt_period_ms)
    if kind == "quota":
        return CpuQuota(quota, quota_period_us)
    raise ValueError(f"unknown load {kind!r}: burners, rt or quota")
