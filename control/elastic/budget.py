"""Budget sources: how much memory and how much speed the policy has right now.

Every source answers ``read() -> Budget``:

- ``free_mem_mb``: memory the policy could still use (GPU memory on a desktop GPU; shared RAM
  on a Jetson or a CPU machine),
- ``slowdown``: how much slower than in the quiet conditions its latency table was measured
  under the model is expected to run now (1.0 = as measured; 2.0 = twice the latency), from
  what the source can see (clock drops, CPU contention),
- ``detail``: the raw readings behind both, for /diagnostics.

Sources (``make_budget_source("auto")`` picks the first that works, and says which):

- ``nvml``        desktop NVIDIA GPUs through NVML (``pip install nvidia-ml-py``): free memory,
                  utilisation, SM clock vs its maximum, throttle reasons;
- ``tegrastats``  Jetson: lines of ``tegrastats`` (a running ``tegrastats`` process, or the file
                  ``tegrastats --logfile`` writes): shared RAM, GPU load and frequency, per-cluster
                  CPU frequency, EMC frequency, power rails;
- ``torch.cuda``  ``torch.cuda.mem_get_info`` (free memory only: no clocks);
- ``cpu``         psutil + /proc/loadavg: available RAM, runnable threads vs cores, CPU frequency.

The slowdown models are deliberately simple (clock ratio, runnable threads per core); the
selector corrects them online from the latencies the policy actually measures.

(Operating-system monitoring, not model code: it lives in control/, next to the selector that
reads it; models/elastic/budget.py re-exports it for one release.)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Budget:
    source: str
    free_mem_mb: float
    slowdown: float = 1.0
    detail: dict = dataclasses.field(default_factory=dict)
    stamp: float = 0.0

    def describe(self) -> str:
        return (f"{self.source}: free {self.free_mem_mb:.0f} MB, slowdown x{self.slowdown:.2f}")


class BudgetSourceError(RuntimeError):
    """A source that cannot run here (no GPU, no NVML, no tegrastats) or gave bad data."""


class BudgetSource:
    name = "source"

    def read(self) -> Budget:
        raise NotImplementedError

    def policy_ran(self, start: float, end: float) -> None:
        """An inference the policy reported, from `start` to `end` (time.monotonic() s). A
        source whose reading includes the policy's own use of the device (the CPU source's
        busy share) leaves it out; the others ignore it."""

    def close(self) -> None:
        pass

    @property
    def description(self) -> str:
        return self.name


# --- Jetson tegrastats ---------------------------------------------------------------------

class TegrastatsParseError(ValueError):
    """A tegrastats line that is malformed or truncated; the message says what is missing."""


_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
# GR3D_FREQ: "37%@[612]", "0%@[0,0]" (one per GPC), "45%@318", "0%" (no clock), "@[314,314,314]"
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[([\d,]*)\]|@(\d+))?(?=\s|$)")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")


@dataclasses.dataclass(frozen=True)
class TegrastatsSample:
    ram_used_mb: int
    ram_total_mb: int
    cpu_load: tuple            # per core, percent; None for a core that is off
    cpu_freq_mhz: tuple        # per core, MHz; None when off or not printed
    emc_load: int | None
    emc_freq_mhz: int | None
    gpu_load: int | None       # GR3D percent
    gpu_freq_mhz: tuple        # one per GPU cluster (GPC); empty when not printed
    rails_mw: dict             # rail -> current mW (the first number of current/avg)
    temps_c: dict

    @property
    def ram_free_mb(self) -> int:
        return self.ram_total_mb - self.ram_used_mb


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    """One tegrastats output line -> TegrastatsSample; TegrastatsParseError if it is malformed.

    RAM and CPU are required (every release prints them); a line cut short before them, or
    with a CPU list that does not close, is refused with the reason."""
    if not isinstance(line, str) or not line.strip():
        raise TegrastatsParseError("empty tegrastats line")
    ram = _RAM.search(line)
    if ram is None:
        raise TegrastatsParseError(f"no 'RAM used/totalMB' field in tegrastats line: {line[:80]!r}")
    used, total = int(ram.group(1)), int(ram.group(2))
    if total <= 0 or used > total:
        raise TegrastatsParseError(f"RAM {used}/{total}MB is not a plausible used/total")
    cpu = _CPU.search(line)
    if cpu is None:
        raise TegrastatsParseError("no complete 'CPU [..]' field (line truncated?): "
                                   f"{line[:80]!r}")
    loads: list[int | None] = []
    freqs: list[int | None] = []
    for i, core in enumerate(cpu.group(1).split(",")):
        core = core.strip()
        if core == "off":
            loads.append(None)
            freqs.append(None)
            continue
        m = re.fullmatch(r"(\d+)%(?:@(\d+))?", core)
        if m is None:
            raise TegrastatsParseError(f"CPU core {i}: {core!r} is not 'load%@MHz' or 'off'")
        loads.append(int(m.group(1)))
        freqs.append(int(m.group(2)) if m.group(2) else None)
    emc = _EMC.search(line)
    gpu_load: int | None = None
    gpu_freq: tuple[int, ...] = ()
    gr3d = _GR3D.search(line)
    if gr3d is not None:
        if gr3d.group(1) is None and gr3d.group(2) is None and gr3d.group(3) is None:
            raise TegrastatsParseError("GR3D_FREQ without load or frequency")
        gpu_load = int(gr3d.group(1)) if gr3d.group(1) else None
        if gr3d.group(2):
            gpu_freq = tuple(int(v) for v in gr3d.group(2).split(",") if v)
        elif gr3d.group(3):
            gpu_freq = (int(gr3d.group(3)),)
    elif "GR3D_FREQ" in line:
        raise TegrastatsParseError(f"unreadable GR3D_FREQ field: "
                                   f"{line[line.index('GR3D_FREQ'):][:40]!r}")
    rails = {m.group(1): int(m.group(2)) for m in _RAIL.finditer(line)}
    temps = {m.group(1): float(m.group(2)) for m in _TEMP.finditer(line)
             if float(m.group(2)) > -200}  # -256C: sensor off
    return TegrastatsSample(
        ram_used_mb=used, ram_total_mb=total, cpu_load=tuple(loads), cpu_freq_mhz=tuple(freqs),
        emc_load=int(emc.group(1)) if emc else None,
        emc_freq_mhz=int(emc.group(2)) if emc and emc.group(2) else None,
        gpu_load=gpu_load, gpu_freq_mhz=gpu_freq, rails_mw=rails, temps_c=temps)


class TegrastatsSource(BudgetSource):
    """Jetson budget from tegrastats lines.

    `path`: a file that ``tegrastats --logfile PATH`` appends to (its last complete line is
    read); None starts ``tegrastats --interval <ms>`` and reads its stdout in a thread.
    Slowdown = reference GPU clock / current GPU clock (the highest clock seen so far, or
    `gpu_max_mhz`), times the same ratio for the EMC (memory) clock when printed."""

    name = "tegrastats"

    def __init__(self, path: str | None = None, interval_ms: int = 100,
                 gpu_max_mhz: float | None = None, emc_max_mhz: float | None = None):
        self.path = Path(path) if path else None
        self.gpu_ref = gpu_max_mhz
        self.emc_ref = emc_max_mhz
        self._proc: subprocess.Popen[str] | None = None
        self._last_line: str | None = None
        if self.path is None:
            exe = shutil.which("tegrastats")
            if exe is None:
                raise BudgetSourceError("tegrastats not found (not a Jetson?)")
            self._proc = subprocess.Popen([exe, "--interval", str(int(interval_ms))],
                                          stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._pump, daemon=True, name="tegrastats").start()
        elif not self.path.is_file():
            raise BudgetSourceError(f"tegrastats log {self.path} does not exist")

    def _pump(self) -> None:
        stdout = self._proc.stdout if self._proc is not None else None
        for line in stdout or ():
            self._last_line = line

    def _line(self) -> str:
        if self.path is None:
            if self._last_line is None:
                raise BudgetSourceError("no tegrastats line yet")
            return self._last_line
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
        complete = [ln for ln in lines if ln.strip()]
        if not complete:
            raise BudgetSourceError(f"tegrastats log {self.path} is empty")
        return complete[-1]

    def read(self) -> Budget:
        return self.budget_from(parse_tegrastats_line(self._line()))

    def budget_from(self, s: TegrastatsSample) -> Budget:
        slowdown = 1.0
        detail = {"ram_used_mb": s.ram_used_mb, "ram_total_mb": s.ram_total_mb,
                  "gpu_load": s.gpu_load}
        gpu = max(s.gpu_freq_mhz) if s.gpu_freq_mhz else 0
        if gpu > 0:
            self.gpu_ref = max(self.gpu_ref or 0.0, gpu)
            slowdown *= self.gpu_ref / gpu
            detail["gpu_mhz"] = gpu
        if s.emc_freq_mhz:
            self.emc_ref = max(self.emc_ref or 0.0, s.emc_freq_mhz)
            slowdown *= self.emc_ref / s.emc_freq_mhz
            detail["emc_mhz"] = s.emc_freq_mhz
        cpus = [f for f in s.cpu_freq_mhz if f]
        if cpus:
            detail["cpu_mhz_max"] = max(cpus)
        if s.rails_mw:
            detail["power_mw"] = sum(s.rails_mw.values())
        return Budget(self.name, float(s.ram_free_mb), slowdown, detail, time.monotonic())

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=2)

    @property
    def description(self) -> str:
        return f"tegrastats ({self.path or 'live process'})"


# --- NVML ----------------------------------------------------------------------------------

#: NVML clocks-throttle reason bits (nvmlClocksThrottleReason*), for the report.
NVML_THROTTLE_REASONS = {0x1: "gpu_idle", 0x2: "app_clocks", 0x4: "sw_power_cap",
                         0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal",
                         0x80: "hw_power_brake", 0x100: "display_clocks"}


def budget_from_nvml(values: dict) -> Budget:
    """A Budget from NVML readings: memory ``free``/``total`` (bytes), ``util_gpu`` (%),
    ``sm_clock`` and ``sm_clock_max`` (MHz), ``throttle_reasons`` (bit mask).
    Slowdown = max SM clock / current SM clock when a reason other than idle holds the clock
    down (an idle GPU also clocks down, and that is not a lack of speed)."""
    for key in ("free", "total", "sm_clock", "sm_clock_max"):
        v = values.get(key)
        if not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"NVML value {key!r} missing or invalid: {v!r}")
    if values["free"] > values["total"]:
        raise ValueError(f"NVML free {values['free']} > total {values['total']}")
    mask = int(values.get("throttle_reasons", 0))
    reasons = [n for bit, n in NVML_THROTTLE_REASONS.items() if mask & bit]
    slowdown = 1.0
    if values["sm_clock"] > 0 and [r for r in reasons if r != "gpu_idle"]:
        slowdown = max(1.0, values["sm_clock_max"] / values["sm_clock"])
    detail = {"util_gpu": values.get("util_gpu"), "sm_mhz": values["sm_clock"],
              "sm_max_mhz": values["sm_clock_max"], "throttle": ",".join(reasons) or "none"}
    return Budget("nvml", values["free"] / 2**20, slowdown, detail, time.monotonic())


class NvmlSource(BudgetSource):
    """Desktop NVIDIA GPU through NVML (nvidia-ml-py). Not verified on a live GPU here."""

    name = "nvml"

    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ImportError as exc:
            raise BudgetSourceError("NVML needs nvidia-ml-py (pip install nvidia-ml-py)") from exc
        try:
            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.gpu_name = pynvml.nvmlDeviceGetName(self._h)
        except pynvml.NVMLError as exc:
            raise BudgetSourceError(f"NVML: {exc}") from exc
        self._nvml = pynvml

    def read(self) -> Budget:
        n, h = self._nvml, self._h
        mem = n.nvmlDeviceGetMemoryInfo(h)
        return budget_from_nvml({
            "free": mem.free, "total": mem.total,
            "util_gpu": n.nvmlDeviceGetUtilizationRates(h).gpu,
            "sm_clock": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
            "sm_clock_max": n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM),
            # (renamed "event reasons" in newer NVML; the old name is a deprecated alias)
            "throttle_reasons": getattr(n, "nvmlDeviceGetCurrentClocksEventReasons",
                                        n.nvmlDeviceGetCurrentClocksThrottleReasons)(h)})

    def close(self) -> None:
        self._nvml.nvmlShutdown()

    @property
    def description(self) -> str:
        return f"nvml ({self.gpu_name})"


class TorchCudaSource(BudgetSource):
    """Free GPU memory from torch.cuda.mem_get_info; no clock information (slowdown 1)."""

    name = "torch.cuda"

    def __init__(self, device: int = 0):
        import torch

        if not torch.cuda.is_available():
            raise BudgetSourceError("torch sees no CUDA GPU")
        self._torch, self.device = torch, device

    def read(self) -> Budget:
        free, total = self._torch.cuda.mem_get_info(self.device)
        return Budget(self.name, free / 2**20, 1.0, {"total_mb": total / 2**20},
                      time.monotonic())


# --- CPU -----------------------------------------------------------------------------------

def read_runnable(loadavg_text: str) -> int:
    """The instantaneous count of runnable threads from /proc/loadavg text ("0.30 0.57 0.62
    2/345 6789": the 2). The kernel prints the same count as /proc/stat's `procs_running`,
    but /proc/loadavg is one short line, and a poll's CPU time counts against a tight CPU
    quota the policy shares."""
    fields = loadavg_text.split()
    running = fields[3].split("/")[0] if len(fields) >= 4 and "/" in fields[3] else ""
    if not running.isdigit():
        raise ValueError(f"no runnable/total field in /proc/loadavg text {loadavg_text!r}")
    return int(running)


def proc_stat_busy_s(stat_text: str, tick_s: float) -> dict[int, float]:
    """Busy seconds per CPU id from /proc/stat text: user + nice + system + irq + softirq +
    steal clock ticks of each `cpuN` line (idle and iowait are not busy; guest time is in
    user already). A last line without its newline (a read cut short) is not used."""
    out = {}
    for line in stat_text.split("\n")[:-1]:
        f = line.split()
        if not f or not f[0].startswith("cpu") or f[0] == "cpu":
            continue
        if len(f) < 9 or not f[0][3:].isdigit():
            raise ValueError(f"/proc/stat line {line!r} has no 8 counters")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[1:9])
        out[int(f[0][3:])] = (user + nice + system + irq + softirq + steal) * tick_s
    if not out:
        raise ValueError("no cpuN lines in /proc/stat text")
    return out


def cgroup_cpu_dirs(proc_cgroup_text: str, root: str = "/sys/fs/cgroup") -> list[tuple[Path, str]]:
    """The cgroup folders whose CPU bandwidth limit applies to the process whose
    /proc/<pid>/cgroup text is given: its own and every ancestor's that is visible, as
    (folder, "v1" | "v2"). cgroup v1 when a hierarchy has the `cpu` controller, else v2."""
    base = Path(root)
    entries = [ln.split(":", 2) for ln in proc_cgroup_text.splitlines() if ln.count(":") >= 2]
    mount: Path | None = None
    path: str | None = None
    version = ""
    for _, controllers, rel in entries:
        if "cpu" in controllers.split(","):
            names = [controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"]
            mount = next((base / n for n in names if (base / n / "cpu.cfs_quota_us").exists()), None)
            path, version = rel, "v1"
            break
    if mount is None:
        path = next((r for h, c, r in entries if h == "0" and c == ""), None)
        mount = next((m for m in (base, base / "unified") if (m / "cgroup.controllers").exists()), None)
        version = "v2"
    if mount is None or path is None:
        return []
    dirs, parts = [], [p for p in path.split("/") if p]
    for k in range(len(parts), -1, -1):
        d = mount.joinpath(*parts[:k])
        if d.is_dir():
            dirs.append((d, version))
    return dirs


def cgroup_cpu_quota(dirs: list[tuple[Path, str]], periods: dict | None = None,
                     read=None) -> float | None:
    """CPUs the cgroup limits allow (quota / period, the smallest along the path, as
    `docker run --cpus`, systemd's CPUQuota= or a Kubernetes CPU limit set it); None when
    no folder sets a limit or none can be read.

    Read at every budget poll, and a poll's own CPU time counts against a tight quota, so:
    plain os.open/os.read on path strings (cheaper than pathlib; `read(path) -> str` replaces
    it, e.g. with reads of files kept open), and with `periods` (a dict the caller keeps, and
    clears now and then) a v1 period file is read again only when its quota changed: one file
    per folder per poll instead of two."""
    read = read or _read_text
    quota = None
    for d, version in dirs:
        base = str(d)
        try:
            if version == "v1":
                q_text = read(base + "/cpu.cfs_quota_us")
                cached = periods.get(base) if periods is not None else None
                if cached is not None and cached[0] == q_text:
                    period = cached[1]
                else:
                    period = int(read(base + "/cpu.cfs_period_us"))
                    if periods is not None:
                        periods[base] = (q_text, period)
                q = int(q_text)
            else:
                q_text, period_text = read(base + "/cpu.max").split()
                q = -1 if q_text == "max" else int(q_text)
                period = int(period_text)
        except (OSError, ValueError):
            continue
        if q > 0 and period > 0:
            quota = q / period if quota is None else min(quota, q / period)
    return quota


def _read_text(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


PER_CPU_READ = 65536  # bytes read of a per-CPU file: a /proc/stat line per CPU for ~1,000 CPUs
MAX_HIDDEN_BUSY = 0.95  # a CPU others hold all the time: plan for 1/20 of it, not for never


def cpu_slowdown(runnable_others: float, threads: int, cores: int,
                 freq_mhz: float | None = None, freq_max_mhz: float | None = None,
                 quota_cpus: float | None = None, hidden_busy: float = 0.0) -> float:
    """Expected latency multiplier of a `threads`-thread model on `cores` cores while
    `runnable_others` other threads want to run (a fair share of the cores), while its
    cgroup may use only `quota_cpus` CPUs, or while others hold a share `hidden_busy` of every
    CPU's time without being runnable when looked at (periodic work at a higher priority: the
    model runs in what is left, 1 - hidden_busy), whichever is worst; times the clock ratio
    when the CPU reports a lower current than maximum frequency."""
    want = threads + max(0.0, runnable_others)
    slowdown = max(1.0, want / max(1, cores)) if want > cores else 1.0
    if quota_cpus and quota_cpus > 0:
        slowdown = max(slowdown, min(threads, cores) / quota_cpus)
    if hidden_busy > 0:
        slowdown = max(slowdown, 1.0 / (1.0 - min(hidden_busy, MAX_HIDDEN_BUSY)))
    if freq_mhz and freq_max_mhz and 0 < freq_mhz < freq_max_mhz:
        slowdown *= freq_max_mhz / freq_mhz
    return slowdown


class CpuSource(BudgetSource):
    """CPU budget: available RAM (psutil), runnable threads on this machine (/proc/loadavg,
    sampled at each read; the largest of the last `window` reads), the CPU
    bandwidth limit of this process's cgroup (a container's `--cpus`, read at each read), the
    CPU time others took without being runnable when read (below), CPU frequency.

    Hidden busy time: work at a higher priority that runs in short bursts (a real-time driver
    or perception thread: SCHED_FIFO, woken by a timer) holds the CPUs between two reads, but
    this reader only runs when it has let go, so the runnable count never sees it. The cgroup
    v1 `cpuacct` root counts every task's CPU time per CPU in nanoseconds (/proc/stat, the
    fallback on cgroup v2, in 10 ms clock ticks, so there over 0.1 s at least); the share of
    the least busy CPU's time used since the previous read, less what the threads runnable at
    this read beyond the policy's own account for (a fair share that they would give up), is
    `hidden_busy` (the largest of the last `window` reads): the policy runs in the rest. In a
    container whose cgroup root is its own, cpuacct sees only the container's tasks.

    The largest, not the median: a load step shows at the first read after it, so the
    selector can step down at the next poll (a median of 3 waited for a second read to agree);
    one quiet read does not undo it, and stepping up again waits for the selector's dwell.

    The policy's own inferences: when its threads are at least the CPUs it may use, an
    inference holds every CPU, the least busy one too, and a read whose interval covers one
    showed it as hidden time (a 3 ms inference in a 5 ms interval: 60% busy, a slowdown of
    2.5 on an idle machine, so the loop stepped down with nothing else running). The inferences the policy
    reports (`policy_ran`) are taken out of every kept read's share, recomputed at each read;
    the newest read, taken while something besides the reader was runnable (it may be an
    inference not yet reported), counts at most as much as the read before it, so a burst
    counts once its second read agrees or its report has taken it out: one poll later.
    With fewer threads than CPUs the least busy CPU is not the policy's: nothing is taken out.

    `threads`: the threads the policy's runtime uses (ONNX Runtime / torch intra-op).
    Other load = runnable threads - 1 (the reading thread itself) - the runnable threads of
    `exclude_pids` (optional), or, without them, - `threads`. Scanning the thread states of a
    process whose threads are busy on other cores disturbed their latency measurably on a
    2-core machine, so nothing is scanned by default, and up to `threads` runnable threads are
    taken for the policy's own. When the policy is not running at a read, that undercounts
    the others by up to `threads`, and the selector's online correction (measured latencies)
    makes up for it. Counting the policy's own threads as load instead held a 1-thread policy
    at a slowdown of 1.5 on an idle 2-core machine (its thread and the camera's, each read
    as load), and a correction learned below 1 does not carry a step up: the loop stayed on
    the small submodels with nothing else running (bench/elastic_budget.py,
    `elastic_slowdown_load_off_p50`)."""

    name = "cpu"

    def __init__(self, threads: int | None = None, window: int = 3,
                 exclude_pids: tuple = (), proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup",
                 per_cpu_time: bool = True):
        import psutil

        self._psutil = psutil
        self.cores = psutil.cpu_count() or 1
        self.policy_threads = threads or self.cores  # runnable threads taken for the policy's
        # ... but more threads than cores are in the latency table already (measured so): no load
        self.threads = min(self.policy_threads, self.cores)
        self.proc = Path(proc)
        self.exclude_pids = tuple(dict.fromkeys(exclude_pids))
        self._runnable: deque[int] = deque(maxlen=max(1, window))
        self._vm_at: float = -1.0
        self._vm: Any = None  # psutil's virtual_memory() and cpu_freq(), refreshed in read()
        self._freq: Any = None
        self.cgroup_root = cgroup_root
        self._cgroup_text: str | None = None
        self._cgroup_all: list[tuple[Path, str]] = []
        self._cgroup: list[tuple[Path, str]] = []
        self._loadavg_path = str(self.proc / "loadavg")
        self._periods: dict = {}  # cgroup v1 period files, read again when a quota changes
        self._fds: dict[str, int] = {}  # files read at every poll, kept open
        # CPU time per CPU: cgroup v1's cpuacct root (ns), else /proc/stat (clock ticks)
        # (per_cpu_time=False: neither, the hidden busy time is 0; bench/elastic_poll_cost.py
        # times the read both ways)
        self._usage_path = next(
            (p for p in (f"{cgroup_root}/{d}/cpuacct.usage_percpu"
                         for d in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")) if os.path.exists(p)),
            None) if per_cpu_time else None
        stat = self.proc / "stat"
        self._stat_path = (str(stat) if per_cpu_time and self._usage_path is None and stat.exists()
                           else None)
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        self._cpus = sorted(os.sched_getaffinity(0))  # the CPUs this process (and the policy) may use
        self._usage_prev: tuple[float, dict[int, float]] | None = None
        # (since, until, busy share less the fair share, maybe an unreported inference)
        self._busy_reads: deque[tuple[float, float, float, bool]] = deque(maxlen=max(1, window))
        self._own_runs: deque[tuple[float, float]] = deque(maxlen=64)  # policy_ran's intervals
        # an inference holds every CPU the policy may use, the least busy one too
        self._own_holds_all = self.threads >= len(self._cpus)

    def _running_threads(self, pid: int) -> int:
        n = 0
        try:
            tasks = list((self.proc / str(pid) / "task").iterdir())
        except OSError:
            return 0
        for task in tasks:
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            # "tid (comm) S ...": the state follows the last ')'
            if stat[stat.rindex(")") + 2:stat.rindex(")") + 3] == "R":
                n += 1
        return n

    def policy_ran(self, start: float, end: float) -> None:
        if self._own_holds_all and end > start:
            self._own_runs.append((start, end))

    def read(self) -> Budget:
        others_now = None
        runnable = 1
        try:
            runnable = read_runnable(self._read_kept(self._loadavg_path))
            # Without the policy's pids, up to `threads` runnable threads may be its own
            # (class docstring): that many are not counted.
            own = (sum(self._running_threads(p) for p in self.exclude_pids) if self.exclude_pids
                   else self.policy_threads)
            others_now = max(0, runnable - 1 - own)
            self._runnable.append(others_now)
        except (OSError, ValueError):
            pass
        others = float(max(self._runnable)) if self._runnable else 0.0
        now = time.monotonic()
        share = self._least_busy_share(now)
        if share is not None:
            busy, since = share
            # The other runnable threads at this read (the policy's own already left out)
            # would share the CPUs fairly: their part of the busy time is not hidden.
            shared = min(1.0, (others_now or 0) / self.cores)
            self._busy_reads.append((since, now, busy - shared,
                                     self._own_holds_all and runnable > 1))
        hidden = self._hidden_busy()
        if now - self._vm_at > 0.5:  # RAM, clock and which cgroup: twice a second is enough
            self._vm, self._vm_at = self._psutil.virtual_memory(), now
            self._freq = self._psutil.cpu_freq()
            self._cgroup = self._cgroup_dirs()  # its quota, though, is read at every poll
            self._periods.clear()  # (a period changed alone shows within half a second)
            kept = {p for p in (self._loadavg_path, self._usage_path, self._stat_path) if p} | {
                f"{d}/{name}" for d, _ in self._cgroup
                for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max")}
            for path in [p for p in self._fds if p not in kept]:
                self._forget(path)  # a folder this process has left
        freq = self._freq
        cur = freq.current if freq else None
        top = freq.max if freq and freq.max else None
        quota = cgroup_cpu_quota(self._cgroup, self._periods, self._read_kept)
        slowdown = cpu_slowdown(others, self.threads, self.cores, cur, top, quota, hidden)
        detail = {"runnable_others": others, "cores": self.cores, "threads": self.threads,
                  "cpu_mhz": cur or 0.0, "cpu_quota": quota or 0.0, "hidden_busy": hidden}
        return Budget(self.name, self._vm.available / 2**20, slowdown, detail, now)

    def _hidden_busy(self) -> float:
        """The largest kept read's busy share less the policy's reported inferences in its
        interval (class docstring); the newest one, if an inference may still be unreported
        in it, at most the one before it."""
        if self._busy_reads:  # runs that ended before the oldest kept read: no longer needed
            while self._own_runs and self._own_runs[0][1] <= self._busy_reads[0][0]:
                self._own_runs.popleft()
        values = []
        for since, until, busy, _ in self._busy_reads:
            own = sum(max(0.0, min(until, e) - max(since, s)) for s, e in self._own_runs)
            values.append(max(0.0, busy - own / (until - since)))
        if not values:
            return 0.0
        _, until, _, maybe_own = self._busy_reads[-1]
        reported = bool(self._own_runs) and self._own_runs[-1][1] >= until
        if maybe_own and not reported:
            values[-1] = min(values[-1], values[-2] if len(values) > 1 else 0.0)
        return max(values)

    MIN_USAGE_SPAN_S = 0.002  # cpuacct (ns): reads closer than this are too short to share out
    PROC_STAT_SPAN_S = 0.1  # /proc/stat counts 10 ms clock ticks: a share needs 10 of them

    def _least_busy_share(self, now: float) -> tuple[float, float] | None:
        """(share, since): the share of the least busy CPU's time (of the CPUs this process
        may run on) that tasks, this reader included, used since the base read at `since`:
        from cpuacct's per-CPU nanoseconds, or from /proc/stat's clock ticks where there is no
        cpuacct (then over at least PROC_STAT_SPAN_S). None without either file or before a
        second read."""
        try:
            if self._usage_path is not None:
                text, span = self._read_kept(self._usage_path, PER_CPU_READ), self.MIN_USAGE_SPAN_S
                busy = {i: int(x) * 1e-9 for i, x in enumerate(text.split())}
            elif self._stat_path is None:
                return None
            else:
                text, span = self._read_kept(self._stat_path, PER_CPU_READ), self.PROC_STAT_SPAN_S
                busy = proc_stat_busy_s(text, self._tick_s)
        except (OSError, ValueError):
            return None
        prev = self._usage_prev
        if prev is not None and now - prev[0] < span:
            return None  # keep the older base: a later read spans long enough
        self._usage_prev = (now, busy)
        if prev is None:
            return None
        cpus = [c for c in self._cpus if c in busy and c in prev[1]]
        if not cpus:
            return None
        used = min(busy[c] - prev[1][c] for c in cpus)
        return min(1.0, max(0.0, used / (now - prev[0]))), prev[0]

    def _read_kept(self, path: str, size: int = 4096) -> str:
        """The file's text, read again (pread at 0: the kernel makes a /proc or cgroup file's
        text afresh at each read from the start) through a descriptor kept open: one system
        call per poll instead of three. A poll's CPU time counts against a tight quota the
        policy shares (bench/elastic_poll_cost.py measures it). A read that fails (its cgroup
        was removed) closes the descriptor, so the next read opens the path afresh."""
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, size, 0)  # a few dozen bytes each, a line per CPU for two
        except OSError:
            self._forget(path)
            raise
        return data.decode()

    def _forget(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for path in list(getattr(self, "_fds", ())):  # (also after a failed __init__)
            self._forget(path)

    def __del__(self):
        self.close()

    def _cgroup_dirs(self) -> list[tuple[Path, str]]:
        """This process's cgroup folders (a process may be moved to another while it runs)
        that carry limit files: cgroup v2's root has no cpu.max, and a file that is not there
        would be a failed open at every poll. Called twice a second, so a folder that gains
        the files (the cpu controller switched on for it) shows then."""
        try:
            text = (self.proc / "self" / "cgroup").read_text()
        except OSError:
            return []
        if text != self._cgroup_text:
            self._cgroup_text, self._cgroup_all = text, cgroup_cpu_dirs(text, self.cgroup_root)
        return [(d, v) for d, v in self._cgroup_all
                if (d / ("cpu.cfs_quota_us" if v == "v1" else "cpu.max")).exists()]

    @property
    def description(self) -> str:
        hidden = ("cpuacct per-CPU time" if self._usage_path else
                  "/proc/stat per-CPU time (no cgroup v1 cpuacct: in 0.1 s steps)"
                  if self._stat_path else "no per-CPU time: higher-priority bursts not seen")
        return f"cpu ({self.cores} cores, psutil + /proc/loadavg + cgroup CPU quota + {hidden})"


# --- choice --------------------------------------------------------------------------------

SOURCES = ("auto", "nvml", "tegrastats", "torch.cuda", "cpu")


def make_budget_source(kind: str = "auto", device: str = "cpu", tegrastats_path: str = "",
                       threads: int | None = None, exclude_pids: tuple = ()) -> tuple[BudgetSource, list[str]]:
    """The source `kind` names, or for "auto" the first that works for `device`: on a GPU
    device nvml, then tegrastats (Jetson), then torch.cuda; on the CPU (or when none of those
    works) the CPU source. Returns (source, notes): notes say why each skipped one was skipped.
    A source named explicitly that cannot run raises BudgetSourceError."""
    notes: list[str] = []

    def build(k):
        if k == "nvml":
            return NvmlSource()
        if k == "tegrastats":
            return TegrastatsSource(tegrastats_path or None)
        if k == "torch.cuda":
            return TorchCudaSource()
        if k == "cpu":
            return CpuSource(threads=threads, exclude_pids=exclude_pids)
        raise ValueError(f"budget source {k!r} not in {SOURCES}")

    if kind != "auto":
        return build(kind), notes
    order = ["tegrastats"] if tegrastats_path else []
    if device.startswith("cuda"):
        order += ["nvml", "tegrastats", "torch.cuda"]
    for k in dict.fromkeys(order):
        try:
            return build(k), notes
        except BudgetSourceError as exc:
            notes.append(f"{k}: {exc}")
    if device.startswith("cuda"):
        notes.append("no GPU budget source works: using the CPU budget")
    else:
        notes.append("policy runs on the CPU: CPU budget (no GPU used)")
    return build("cpu"), notes


__all__ = [
    "MAX_HIDDEN_BUSY", "NVML_THROTTLE_REASONS", "PER_CPU_READ", "SOURCES", "Budget", "BudgetSource",
    "BudgetSourceError", "CpuSource", "NvmlSource", "TegrastatsParseError", "TegrastatsSample",
    "TegrastatsSource", "TorchCudaSource", "budget_from_nvml", "cgroup_cpu_dirs", "cgroup_cpu_quota",
    "cpu_slowdown", "make_budget_source", "parse_tegrastats_line", "proc_stat_busy_s", "read_runnable",
]
