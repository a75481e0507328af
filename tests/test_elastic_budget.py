"""Budget sources: tegrastats lines from real boards (tests/fixtures/tegrastats-lines.txt),
NVML-style values, the CPU source on this machine, and the automatic choice."""

import os
from pathlib import Path

import pytest

from embodied_stack.control.elastic import budget as budget_module
from embodied_stack.control.elastic.budget import (
    Budget,
    BudgetSourceError,
    CpuSource,
    TegrastatsParseError,
    TegrastatsSource,
    budget_from_nvml,
    cgroup_cpu_dirs,
    cgroup_cpu_quota,
    cpu_slowdown,
    make_budget_source,
    parse_tegrastats_line,
    proc_stat_busy_s,
    read_runnable,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tegrastats-lines.txt"
LINES = [ln.strip() for ln in FIXTURE.read_text().splitlines()
         if ln.strip() and not ln.startswith("#")]


def test_fixture_has_the_boards():
    assert len(LINES) >= 4


@pytest.mark.parametrize("line", LINES)
def test_every_fixture_line_parses(line, tmp_path):
    s = parse_tegrastats_line(line)
    assert 0 < s.ram_used_mb <= s.ram_total_mb
    assert len(s.cpu_load) == len(s.cpu_freq_mhz) >= 6
    (tmp_path / "t.log").write_text(line + "\n")
    budget = TegrastatsSource(str(tmp_path / "t.log")).read()
    assert budget.free_mem_mb == s.ram_total_mb - s.ram_used_mb and budget.slowdown >= 1.0


def test_orin_agx_line_by_hand():
    s = parse_tegrastats_line(LINES[0])
    assert (s.ram_used_mb, s.ram_total_mb) == (18207, 62841)
    assert s.cpu_load[:2] == (14, 5) and s.cpu_freq_mhz[4] == 1267 and len(s.cpu_load) == 12
    assert (s.emc_load, s.emc_freq_mhz) == (3, 2133)
    assert (s.gpu_load, s.gpu_freq_mhz) == (0, (0, 0))
    # power rails: the first number of current/avg
    assert s.rails_mw == {"VDD_GPU_SOC": 2412, "VDD_CPU_CV": 1607, "VIN_SYS_5V0": 4707}
    assert s.temps_c["tj"] == pytest.approx(52.562)


def test_idle_orin_drops_switched_off_sensors():
    s = parse_tegrastats_line(LINES[1])
    assert "GPU" not in s.temps_c and "CV0" not in s.temps_c  # -256C = off
    assert s.rails_mw["VDDQ_VDD2_1V8AO"] == 301 and s.rails_mw["NC"] == 0


def test_xavier_nx_line_by_hand():
    s = parse_tegrastats_line(LINES[2])
    assert s.cpu_load == (3, 7, 1, 0, None, None)  # two cores off
    assert s.gpu_freq_mhz == (510,) and s.emc_freq_mhz == 1600
    assert s.rails_mw["VDD_IN"] == 5079


def test_orin_jp5_gr3d_without_clock():
    s = parse_tegrastats_line(LINES[3])
    assert s.gpu_load == 0 and s.gpu_freq_mhz == () and s.emc_freq_mhz is None
    assert s.rails_mw == {}


BASE = "RAM 3000/7000MB (lfb 1x4MB) CPU [10%@1500,20%@1500] EMC_FREQ 5%@1600 "


@pytest.mark.parametrize("field, load, freq", [
    ("GR3D_FREQ 37%@[612]", 37, (612,)),
    ("GR3D_FREQ 0%@[0,0]", 0, (0, 0)),
    ("GR3D_FREQ 45%@318", 45, (318,)),
    ("GR3D_FREQ @[314,314,314]", None, (314, 314, 314)),
    ("GR3D_FREQ 12%", 12, ()),
])
def test_gr3d_formats(field, load, freq):
    s = parse_tegrastats_line(BASE + field + " VDD_IN 5000mW/4800mW")
    assert (s.gpu_load, s.gpu_freq_mhz) == (load, freq)
    assert s.rails_mw == {"VDD_IN": 5000}


@pytest.mark.parametrize("bad, why", [
    ("", "empty"),
    ("RAM 3000/7000MB (lfb 1x4MB) CPU [10%@1500,20%", "CPU"),  # truncated
    ("SWAP 0/100MB CPU [1%@100]", "RAM"),
    ("RAM 9000/7000MB CPU [1%@100]", "plausible"),
    ("RAM 3000/7000MB CPU [1%@100,fast]", "core 1"),
    ("RAM 3000/7000MB CPU [1%@100] GR3D_FREQ hot", "GR3D_FREQ"),
    (LINES[0][:40], "RAM"),
    (LINES[0][:120], "CPU"),
])
def test_malformed_or_truncated_line_is_a_clear_error(bad, why):
    with pytest.raises(TegrastatsParseError, match=why):
        parse_tegrastats_line(bad)


def test_tegrastats_log_source_reads_the_last_line_and_clock_drop(tmp_path):
    log = tmp_path / "tegrastats.log"
    log.write_text(BASE + "GR3D_FREQ 50%@[1300]\n")
    src = TegrastatsSource(str(log))
    b = src.read()
    assert b.source == "tegrastats" and b.free_mem_mb == 4000 and b.slowdown == 1.0
    with open(log, "a") as f:
        f.write(BASE + "GR3D_FREQ 99%@[325]\n")
    assert src.read().slowdown == pytest.approx(4.0)  # the highest clock seen is the reference
    with open(log, "a") as f:
        f.write("RAM 3000/7000MB CPU [10%@15")  # tegrastats cut mid-write
    with pytest.raises(TegrastatsParseError):
        src.read()


def test_tegrastats_missing_log_is_refused(tmp_path):
    with pytest.raises(BudgetSourceError, match="does not exist"):
        TegrastatsSource(str(tmp_path / "nope.log"))


# --- NVML-style values -------------------------------------------------------------------

GB = 2**30


def test_nvml_idle_clock_is_not_a_slowdown():
    b = budget_from_nvml({"free": 20 * GB, "total": 80 * GB, "util_gpu": 0, "sm_clock": 345,
                          "sm_clock_max": 1980, "throttle_reasons": 0x1})
    assert b.source == "nvml" and b.free_mem_mb == 20 * 1024 and b.slowdown == 1.0
    assert b.detail["throttle"] == "gpu_idle"


def test_nvml_thermal_throttle_slows_by_the_clock_ratio():
    b = budget_from_nvml({"free": 1 * GB, "total": 80 * GB, "util_gpu": 97, "sm_clock": 990,
                          "sm_clock_max": 1980, "throttle_reasons": 0x20 | 0x4})
    assert b.slowdown == pytest.approx(2.0)
    assert b.detail["throttle"] == "sw_power_cap,sw_thermal"


@pytest.mark.parametrize("values", [
    {"free": 1, "total": 2, "sm_clock": 100},                           # no max clock
    {"free": 3 * GB, "total": 2 * GB, "sm_clock": 1, "sm_clock_max": 2},  # free > total
    {"free": -1, "total": 2, "sm_clock": 1, "sm_clock_max": 2},
])
def test_nvml_bad_values_are_a_clear_error(values):
    with pytest.raises(ValueError, match="NVML"):
        budget_from_nvml(values)


# --- CPU ---------------------------------------------------------------------------------

def test_cpu_slowdown_model():
    assert cpu_slowdown(0, threads=2, cores=2) == 1.0
    assert cpu_slowdown(2, threads=2, cores=2) == 2.0  # two burners: half the cores
    assert cpu_slowdown(6, threads=1, cores=8) == 1.0
    assert cpu_slowdown(0, 1, 4, freq_mhz=1000, freq_max_mhz=2000) == 2.0


def test_runnable_from_loadavg():
    assert read_runnable("0.30 0.57 0.62 7/345 23719\n") == 7
    for bad in ("", "0.30 0.57 0.62\n", "0.30 0.57 0.62 x/345 1\n"):
        with pytest.raises(ValueError, match="loadavg"):
            read_runnable(bad)


def test_cpu_source_counts_other_runnable_threads(tmp_path):
    """A fake /proc: 5 runnable threads: the reader, 2 in the excluded process, 2 others."""
    (tmp_path / "loadavg").write_text("0.1 0.1 0.1 5/99 1\n")
    for tid, state in ((11, "R"), (12, "R"), (13, "S")):
        d = tmp_path / "4242" / "task" / str(tid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{tid} (ort worker) {state} 1 2 3\n")
    src = CpuSource(threads=2, proc=str(tmp_path), exclude_pids=(4242,))
    b = src.read()
    assert b.detail["runnable_others"] == 2  # 5 - the reader - 2 of the excluded process
    assert b.slowdown == pytest.approx(max(1.0, (2 + 2) / src.cores))
    # no pids to scan: up to `threads` runnable threads are taken for the policy's own
    assert CpuSource(threads=2, proc=str(tmp_path)).read().detail["runnable_others"] == 2
    assert CpuSource(threads=1, proc=str(tmp_path)).read().detail["runnable_others"] == 3
    assert b.free_mem_mb > 0


def test_auto_on_cpu_says_cpu():
    src, notes = make_budget_source("auto", device="cpu")
    assert src.name == "cpu" and any("CPU" in n for n in notes)
    b = src.read()
    assert isinstance(b, Budget) and b.slowdown >= 1.0 and "cpu" in b.describe()


def test_named_source_that_cannot_run_raises():
    with pytest.raises(BudgetSourceError):
        make_budget_source("tegrastats", tegrastats_path="/nonexistent/tegrastats.log")
    with pytest.raises(ValueError, match="not in"):
        make_budget_source("psychic")


def test_cpu_source_sees_a_load_step_at_the_first_read_and_drops_it_after_the_window(tmp_path):
    """Misses cluster right after a load step: the source reports the load at the first read
    that sees it (not once a median of reads agrees), and forgets it `window` reads later."""
    loadavg = tmp_path / "loadavg"
    src = CpuSource(threads=2, window=3, proc=str(tmp_path))
    seen = []
    for running in (3, 3, 3, 9, 3, 3, 3, 3):  # the reader and the policy's 2; then 6 others
        loadavg.write_text(f"0.5 0.5 0.5 {running}/99 1\n")
        seen.append(src.read().detail["runnable_others"])
    assert seen == [0, 0, 0, 6, 6, 6, 0, 0]


def _cgroup_tree(root, files: dict) -> None:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)


def test_cgroup_v1_quota_is_the_smallest_along_the_path(tmp_path):
    _cgroup_tree(tmp_path, {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/cpu.cfs_quota_us": "150000\n",
        "cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",  # docker run --cpus 0.5
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    })
    text = "9:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    dirs = cgroup_cpu_dirs(text, str(tmp_path))
    assert [d.name for d, v in dirs] == ["abc", "docker", "cpu,cpuacct"] and dirs[0][1] == "v1"
    assert cgroup_cpu_quota(dirs) == pytest.approx(0.5)
    (tmp_path / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(dirs) == pytest.approx(1.5)  # the parent's limit still applies


def test_cgroup_v2_quota_and_no_limit(tmp_path):
    _cgroup_tree(tmp_path, {"cgroup.controllers": "cpu memory\n",
                            "robot.slice/cpu.max": "max 100000\n",
                            "robot.slice/policy.service/cpu.max": "25000 100000\n"})
    dirs = cgroup_cpu_dirs("0::/robot.slice/policy.service\n", str(tmp_path))
    assert all(v == "v2" for _, v in dirs)
    assert cgroup_cpu_quota(dirs) == pytest.approx(0.25)
    (tmp_path / "robot.slice/policy.service/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(dirs) is None
    (tmp_path / "robot.slice/policy.service/cpu.max").write_text("garbage\n")
    assert cgroup_cpu_quota(dirs) is None  # unreadable: no limit known, no crash
    assert cgroup_cpu_dirs("", str(tmp_path)) == []
    assert cgroup_cpu_dirs("0::/x\n", str(tmp_path / "absent")) == []


def test_cpu_slowdown_under_a_quota():
    assert cpu_slowdown(0, threads=1, cores=2, quota_cpus=0.25) == pytest.approx(4.0)
    assert cpu_slowdown(0, threads=2, cores=2, quota_cpus=4.0) == 1.0  # a loose limit
    assert cpu_slowdown(6, threads=2, cores=2, quota_cpus=1.0) == pytest.approx(4.0)  # the worse


def test_cpu_source_follows_a_quota_change_at_the_next_read(tmp_path):
    """`docker update --cpus 0.25` on a running container: the next read sees it."""
    proc = tmp_path / "proc"
    _cgroup_tree(proc, {"loadavg": "0.0 0.0 0.0 1/99 1\n", "self/cgroup": "0::/policy\n"})
    cg = tmp_path / "cg"
    _cgroup_tree(cg, {"cgroup.controllers": "cpu\n", "policy/cpu.max": "max 100000\n"})
    src = CpuSource(threads=1, proc=str(proc), cgroup_root=str(cg))
    assert src.read().slowdown == 1.0
    (cg / "policy/cpu.max").write_text("25000 100000\n")
    b = src.read()
    assert b.slowdown == pytest.approx(4.0) and b.detail["cpu_quota"] == pytest.approx(0.25)


def test_cgroup_v1_period_is_read_again_when_the_quota_changes(tmp_path):
    """With a period cache a v1 poll reads one file per folder; a new quota re-reads the
    period, and a period changed alone shows once the caller clears the cache."""
    _cgroup_tree(tmp_path, {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
                            "cpu/box/cpu.cfs_quota_us": "25000\n",
                            "cpu/box/cpu.cfs_period_us": "100000\n"})
    dirs = cgroup_cpu_dirs("4:cpu:/box\n", str(tmp_path))
    periods = {}
    assert cgroup_cpu_quota(dirs, periods) == pytest.approx(0.25)
    (tmp_path / "cpu/box/cpu.cfs_period_us").write_text("50000\n")
    (tmp_path / "cpu/box/cpu.cfs_quota_us").write_text("40000\n")  # docker update --cpus 0.8
    assert cgroup_cpu_quota(dirs, periods) == pytest.approx(0.8)
    (tmp_path / "cpu/box/cpu.cfs_period_us").write_text("100000\n")  # the period alone
    assert cgroup_cpu_quota(dirs, periods) == pytest.approx(0.8)  # cached until cleared
    periods.clear()
    assert cgroup_cpu_quota(dirs, periods) == pytest.approx(0.4)
    assert cgroup_cpu_quota(dirs) == pytest.approx(0.4)  # no cache: both files every time


def test_cpu_source_opens_each_file_once_and_none_that_is_not_there(tmp_path, monkeypatch):
    """A poll's CPU time counts against a tight quota: the source keeps the files it reads at
    every poll open (a read is one pread), and leaves out cgroup v2's root, which has no
    cpu.max (a failed open at every poll). A quota change still shows at the next read."""
    proc = tmp_path / "proc"
    _cgroup_tree(proc, {"loadavg": "0.0 0.0 0.0 1/99 1\n", "self/cgroup": "0::/policy\n"})
    cg = tmp_path / "cg"
    _cgroup_tree(cg, {"cgroup.controllers": "cpu\n", "policy/cpu.max": "50000 100000\n"})
    src = CpuSource(threads=1, proc=str(proc), cgroup_root=str(cg))
    opened = []
    real_open = budget_module.os.open
    monkeypatch.setattr(budget_module.os, "open", lambda p, *a: opened.append(p) or real_open(p, *a))
    assert src.read().detail["cpu_quota"] == pytest.approx(0.5)
    (cg / "policy/cpu.max").write_text("25000 100000\n")  # docker update --cpus 0.25
    for _ in range(3):
        assert src.read().detail["cpu_quota"] == pytest.approx(0.25)
    assert sorted(opened) == [str(cg / "policy/cpu.max"), str(proc / "loadavg")]
    src.close()
    assert src._fds == {}


def test_cpu_source_keeps_its_files_open_across_the_twice_a_second_refresh(tmp_path, monkeypatch):
    """The cgroup is resolved again twice a second; files of folders still in use stay open
    (reopening them each time was a repeated cost), those of a folder left are closed."""
    proc = tmp_path / "proc"
    _cgroup_tree(proc, {"loadavg": "0.0 0.0 0.0 1/99 1\n", "self/cgroup": "0::/a\n"})
    cg = tmp_path / "cg"
    _cgroup_tree(cg, {"cgroup.controllers": "cpu\n", "a/cpu.max": "50000 100000\n",
                      "b/cpu.max": "25000 100000\n"})
    clock = iter(range(1000))
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: float(next(clock)))  # 1 s a read
    src = CpuSource(threads=1, proc=str(proc), cgroup_root=str(cg))
    opened = []
    real_open = budget_module.os.open
    monkeypatch.setattr(budget_module.os, "open", lambda p, *a: opened.append(p) or real_open(p, *a))
    for _ in range(3):
        assert src.read().detail["cpu_quota"] == pytest.approx(0.5)
    assert sorted(opened) == [str(cg / "a/cpu.max"), str(proc / "loadavg")]
    (proc / "self/cgroup").write_text("0::/b\n")  # moved to another cgroup
    assert src.read().detail["cpu_quota"] == pytest.approx(0.25)
    assert sorted(src._fds) == [str(cg / "b/cpu.max"), str(proc / "loadavg")]
    src.close()


def test_cpu_slowdown_with_hidden_busy_time():
    assert cpu_slowdown(0, threads=1, cores=2, hidden_busy=0.75) == pytest.approx(4.0)
    assert cpu_slowdown(0, threads=1, cores=2, hidden_busy=1.0) == pytest.approx(20.0)  # capped
    assert cpu_slowdown(4, threads=2, cores=2, hidden_busy=0.5) == pytest.approx(3.0)  # the worse
    assert cpu_slowdown(0, threads=2, cores=2, hidden_busy=0.0) == 1.0


def _cpuacct_source(tmp_path, monkeypatch, window=1):
    """A CpuSource over a fake /proc and cgroup v1 cpuacct root, on a fake clock."""
    import types

    clock = [100.0]
    monkeypatch.setattr(budget_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("1:cpu,cpuacct:/\n")
    _cgroup_tree(cg, {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                      "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    src = CpuSource(threads=1, window=window, proc=str(proc), cgroup_root=str(cg))
    usage = cg / "cpu,cpuacct" / "cpuacct.usage_percpu"

    def read_at(t, ns_per_cpu, running=1):
        clock[0] = t
        usage.write_text(" ".join(str(int(n)) for n in ns_per_cpu) + " \n")
        (proc / "loadavg").write_text(f"0.5 0.5 0.5 {running}/99 1\n")
        return src.read()

    return src, read_at


def test_cpu_source_sees_higher_priority_bursts_the_runnable_count_misses(tmp_path, monkeypatch):
    """Real-time burners hold every core 75% of the time but sleep whenever the reader runs:
    /proc/loadavg shows only the reader, cpuacct shows the CPU time they took."""
    (tmp_path / "cg" / "cpu,cpuacct").mkdir(parents=True)
    (tmp_path / "cg" / "cpu,cpuacct" / "cpuacct.usage_percpu").write_text("0 0 \n")
    src, read_at = _cpuacct_source(tmp_path, monkeypatch)
    n = src.cores
    assert "cpuacct" in src.description and "not seen" not in src.description
    assert read_at(0.00, [0] * n).detail["hidden_busy"] == 0.0  # no interval yet
    b = read_at(0.01, [7.5e6] * n)  # 7.5 ms of every 10 ms on every CPU
    assert b.detail["runnable_others"] == 0
    assert b.detail["hidden_busy"] == pytest.approx(0.75)
    assert b.slowdown == pytest.approx(4.0)
    # the least busy CPU counts: one busy core leaves the other free (no slowdown)
    b = read_at(0.02, [1.75e7] + [7.5e6] * (n - 1))
    assert b.detail["hidden_busy"] == pytest.approx(0.0) and b.slowdown == 1.0
    # reads closer than MIN_USAGE_SPAN_S keep the older base (no noisy share of 0.5 ms)
    b = read_at(0.0205, [1.80e7] + [7.9e6] * (n - 1))
    assert b.detail["hidden_busy"] == pytest.approx(0.0)
    b = read_at(0.03, [2.75e7] + [1.5e7] * (n - 1))  # 7.5 ms of 10 since the read at 0.02
    assert b.detail["hidden_busy"] == pytest.approx(0.75)


def test_cpu_source_leaves_out_the_policys_own_inferences(tmp_path, monkeypatch):
    """A policy with as many threads as CPUs holds the least busy CPU while it infers: on an
    idle machine its own inference must not read as hidden busy time. A reported inference is
    taken out of every kept read; the newest read, while something besides the reader is
    runnable, counts at most as the one before it until its inference is reported; hidden
    load that no report explains still shows, one poll later."""
    (tmp_path / "cg" / "cpu,cpuacct").mkdir(parents=True)
    (tmp_path / "cg" / "cpu,cpuacct" / "cpuacct.usage_percpu").write_text("0 0 \n")
    src, read_at = _cpuacct_source(tmp_path, monkeypatch, window=3)
    n = len(src._cpus)
    src.threads = src.policy_threads = n  # the policy's threads: every CPU it may use
    src._own_holds_all = True
    ns = [0.0] * n

    def busy(t, ms, running):
        for c in range(n):
            ns[c] += ms * 1e6
        return read_at(t, ns, running=running).detail["hidden_busy"]

    assert busy(0.000, 0.0, 1) == 0.0
    assert busy(0.005, 0.0, 1) == 0.0
    # an inference from 6 to 9.5 ms: the read at 10 ms sees 3.5 of 5 ms busy on every CPU,
    # read while the policy's threads (and the reader) were runnable: not reported yet
    assert busy(0.010, 3.5, 1 + n) == 0.0
    src.policy_ran(0.006, 0.0095)  # the report: taken out of that read for good
    assert busy(0.015, 0.0, 1) == 0.0
    assert busy(0.020, 0.0, 1) == 0.0
    # without the report the same burst counts once a second read has it
    assert busy(0.025, 3.5, 1 + n) == 0.0
    assert busy(0.030, 0.0, 1) == pytest.approx(0.7)
    # hidden load (real-time bursts, 60% of every CPU) with the policy idle: the reader alone
    # is runnable, so the first read counts at once
    for t in (0.035, 0.040):
        busy(t, 0.0, 1)
    assert busy(0.045, 0.0, 1) == 0.0  # the burst has left the last 3 reads
    assert busy(0.050, 0.0, 1) == 0.0
    assert busy(0.055, 0.0, 1) == 0.0
    assert busy(0.060, 3.0, 1) == pytest.approx(0.6)
    # the same load while the policy infers (5 ms of 5, reported): that read shows nothing,
    # the reads around it still do
    assert busy(0.065, 5.0, 1 + n) == pytest.approx(0.6)
    src.policy_ran(0.060, 0.065)
    assert busy(0.070, 3.0, 1) == pytest.approx(0.6)
    assert list(src._own_runs) == [(0.060, 0.065)]  # the earlier run left with its reads
    src.close()
    # fewer threads than CPUs: the least busy CPU is not the policy's, nothing is taken out
    one = CpuSource(threads=1, per_cpu_time=False)
    one._cpus = [0, 1]
    one._own_holds_all = one.threads >= len(one._cpus)
    one.policy_ran(0.0, 1.0)
    assert not one._own_runs


def test_more_policy_threads_than_cores_is_no_load_of_its_own(tmp_path):
    """A 2-thread policy on a 1-core machine: its table was measured so, and an idle machine
    must not read as a slowdown of 2."""
    proc = tmp_path / "proc"
    _cgroup_tree(proc, {"loadavg": "0.0 0.0 0.0 1/99 1\n", "self/cgroup": "0::/\n"})
    src = CpuSource(threads=64, proc=str(proc), cgroup_root=str(tmp_path / "cg"), per_cpu_time=False)
    assert src.threads == src.cores
    assert src.read().slowdown == 1.0
    src.close()


def test_cpu_source_does_not_count_busy_time_that_runnable_threads_share(tmp_path, monkeypatch):
    """Normal burners that are runnable when read share the cores fairly: their busy time is
    the runnable count's (fair share), not hidden time as well."""
    (tmp_path / "cg" / "cpu,cpuacct").mkdir(parents=True)
    (tmp_path / "cg" / "cpu,cpuacct" / "cpuacct.usage_percpu").write_text("0 0 \n")
    src, read_at = _cpuacct_source(tmp_path, monkeypatch)
    n = src.cores
    read_at(0.0, [0] * n, running=1)
    b = read_at(0.01, [1e7] * n, running=1 + 2 * n + 1)  # the reader, 2 per core, the policy
    assert b.detail["hidden_busy"] == 0.0
    assert b.slowdown == pytest.approx((1 + 2 * n) / n)  # (threads + others) / cores


def test_busy_time_from_proc_stat():
    text = ("cpu  10 0 10 500 0 0 0 0 0 0\n"
            "cpu0 7 1 2 250 9 1 1 3 5 0\n"  # busy: user nice system irq softirq steal
            "cpu1 3 0 8 250 0 0 0 0 0 0\n"
            "intr 123 4 5\n"
            "cpu2 1 2")  # cut short by the read: not used
    busy = proc_stat_busy_s(text, 0.01)
    assert busy == pytest.approx({0: 0.15, 1: 0.11})
    for bad in ("intr 1 2\n", "cpu0 1 2 3\n", "cpuX 1 2 3 4 5 6 7 8\n"):
        with pytest.raises(ValueError, match="/proc/stat"):
            proc_stat_busy_s(bad, 0.01)


def test_cpu_source_without_cpuacct_reads_proc_stat_over_a_tenth_of_a_second(tmp_path,
                                                                              monkeypatch):
    """cgroup v2: no cpuacct; /proc/stat counts 10 ms ticks, so shares span >= 0.1 s."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text("cpu  0 0 0 0 0 0 0 0 0 0\n")
    src, read_at = _cpuacct_source(tmp_path, monkeypatch)
    assert src._usage_path is None and "/proc/stat" in src.description
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "proc" / "stat"

    def stat_at(t, busy_s):
        stat.write_text("cpu  0 0 0 0 0 0 0 0 0 0\n" + "".join(
            f"cpu{c} {round(b / tick)} 0 0 {round((t - b) / tick)} 0 0 0 0 0 0\n"
            for c, b in enumerate(busy_s)) + "intr 1\n")
        return read_at(t, [0] * src.cores)

    n = src.cores
    assert stat_at(0.0, [0.0] * n).detail["hidden_busy"] == 0.0
    assert stat_at(0.05, [0.04] * n).detail["hidden_busy"] == 0.0  # too short: base kept
    b = stat_at(0.2, [0.15] * n)  # 0.15 s of 0.2 s busy on every CPU
    assert b.detail["hidden_busy"] == pytest.approx(0.75, abs=0.06)
    assert b.slowdown == pytest.approx(4.0, rel=0.3)


def test_cpu_source_without_per_cpu_time_says_so(tmp_path, monkeypatch):
    assert "not seen" in CpuSource(threads=1, per_cpu_time=False).description  # switched off
    src, read_at = _cpuacct_source(tmp_path, monkeypatch)
    assert "not seen" in src.description
    assert read_at(0.0, [0]).detail["hidden_busy"] == 0.0
    assert read_at(1.0, [0]).detail["hidden_busy"] == 0.0
