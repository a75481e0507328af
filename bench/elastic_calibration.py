"""Where on this machine the elastic bench's question has an answer: the load level (and, if
need be, a lower control rate) at which fixed `full` misses its deadline often and the
smallest submodel almost never (bench/elastic_budget.py calibrates with this before it runs).

A hand-picked load share fits one machine on one day: on a slightly slower VM of the same kind
nothing fits, on a faster one nothing misses, and the bench then says nothing about elastic
switching. So the bench measures, here and now, each submodel's inference latency at the
control rate under the load it will switch on (the same control loop, the load on throughout),
and picks the level by bisection:

1. the level where `full`'s median latency is FULL_AIM x the deadline (so fixed `full` misses
   most of its deadlines under load, past the 20% the target asks for, at the lightest load
   that does so clearly: the smallest's own tail only grows with the load);
2. there the smallest submodel must fit: over a longer probe (LONG_PROBE_N inferences), the 95%
   upper bound of its share of late inferences at most SMALLEST_MISS (a share measured over a
   few hundred inferences says little about the thousands of a run: the elastic loop can miss
   no less than the smallest it falls back to; and a true share of 0.3% needs about 1,500
   inferences for its upper bound to clear 1%).
   That longer probe runs under the run's own on/off schedule when the bench gives one
   (`measure_switched`): the moments the load switches on are where a level that fits under
   steady load still makes the smallest late;
3. if it does not, one lighter level is tried, where `full`'s median is FULL_LIGHT x the
   deadline; if the smallest does not fit there either, no level separates the two at this
   rate (at a heavier load its tail is only longer; a lighter one leaves `full` fitting half
   the time or more), unless the smallest fitted there and only `full`'s check fell short
   (its median over a hundred inferences is noisy): then SPLIT_STEPS bisections between the
   two levels look for one where both hold. Failing that, the
   next, lower control rate is tried (a longer deadline makes fixed costs such as the pipe to
   the world and timer jitter a smaller share), down to the lowest rate allowed (the policy
   node's own defaults are 10-30 Hz).

When no rate works the result says why, with every probe, and the bench exits non-zero:
that is a result about the machine, not a pass.

Time is bounded: the policy infers once per action chunk, so at 10 Hz a probe of 1,600
inferences would take many minutes. Each long probe stops after LONG_PROBE_S (quick) or
1.5 x LONG_PROBE_S seconds, and the whole calibration at `until` (the bench's
--calibration-s): a probe cut short by time is judged on what it got (no late inference at all,
p99 within SMALLEST_P99 x the deadline, and its upper bound reported), and a calibration out of
time stops with that reason.

    cal = calibrate(measure, load, rates=[100, 30, 20, 10], margin_s=0.003)
    cal.separated, cal.rate_hz, cal.level, cal.reason, cal.probes

`measure(submodel, rate_hz, level, n)` runs n inferences of `submodel` at `rate_hz` with the
load on at `level` and returns their latencies in seconds; `measure_switched` (optional, same
signature) does the same with the load switched on and off as the bench's run does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from embodied_stack.sim.train.rollouts import success_interval

#: `full`'s median latency / deadline aimed at: the lightest load at which fixed `full` clearly
#: misses (most of its inferences under load late, with room for the median's noise). Lighter
#: is better for the question: the smallest submodel's own tail grows with the load, and the
#: targets ask only that fixed `full` misses at least 20% overall.
FULL_AIM = 1.15
#: The least `full` median / deadline that counts as "full misses": half its inferences late
#: under load, so with the load on 70% of the time fixed `full` misses about a third overall.
FULL_MIN = 1.0
#: Where the smallest does not fit at FULL_AIM, one lighter level is tried: `full`'s median at
#: this x the deadline (the smallest's tail is shorter there; `full` still misses most of its
#: deadlines under load).
FULL_LIGHT = 1.05
#: The smallest submodel must fit: the 95% upper bound of its late share at most this. The
#: elastic loop's target is 1%, and a reactive loop also pays about one late inference at each
#: load step (the one in flight when the load comes): about 0.3% of a --quick run's 680
#: inferences. So the smallest may take at most the rest ...
SMALLEST_MISS = 0.007
#: ... or, for a probe its time limit cut short (too few inferences to bound the share), no
#: late inference at all and p99 / deadline at most this.
SMALLEST_P99 = 0.8
#: Bisection steps on the level.
STEPS = 7
#: Bisection steps between a level where the smallest is late and a lighter one where full's
#: median came back under FULL_MIN x the deadline.
SPLIT_STEPS = 2
#: Seconds a long probe of the smallest submodel may take (x2 outside --quick).
LONG_PROBE_S = 60.0
#: Inferences in a long probe (at least; more at high rates: 10 s of the control loop).
LONG_PROBE_N = 1600
#: Seconds a short probe of `full` may take.
SHORT_PROBE_S = 8.0


@dataclass
class Probe:
    """One measurement: `n` inferences of `submodel` at `rate_hz` with the load at `level`."""

    rate_hz: float
    level: float
    submodel: str
    n: int
    p50_ms: float
    p99_ms: float
    miss_rate: float
    threads: int | None = None  # the policy's intra-op threads (set by the bench)
    switched: bool = False  # measured under the run's on/off load schedule (else: load on throughout)
    cut_short: bool = False  # stopped by its time limit before it had the inferences it asked for


@dataclass
class Calibration:
    """What the calibration chose, or why nothing could be chosen."""

    load: str
    level_name: str
    separated: bool = False
    rate_hz: float | None = None
    deadline_ms: float | None = None
    level: float | None = None
    reason: str = ""
    seconds: float = 0.0
    threads: int | None = None  # the policy's intra-op threads (set by the bench)
    out_of_time: bool = False  # stopped at its time limit before it found a level
    probes: list[Probe] = field(default_factory=list)

    def figures(self) -> dict:
        """Flat JSON keys (`calibration_*`) for the bench's result file."""
        return {"calibration_load": self.load, "calibration_level_name": self.level_name,
                "calibration_separated": self.separated, "calibration_rate_hz": self.rate_hz,
                "calibration_deadline_ms": self.deadline_ms, "calibration_level": self.level,
                "calibration_threads": self.threads,
                "calibration_reason": self.reason, "calibration_seconds": round(self.seconds, 1),
                "calibration_out_of_time": self.out_of_time,
                "calibration_probes": [asdict(p) for p in self.probes]}


def probe_size(rate_hz: float, seconds: float, least: int) -> int:
    """Inferences in a probe: `seconds` of the control loop, at least `least`."""
    return max(least, int(round(seconds * rate_hz)))


def calibrate(measure: Callable[[str, float, float, int], np.ndarray], load, rates, margin_s: float,
              smallest: str, lightest: float, heaviest: float, integer: bool = False,
              quick: bool = False, log: Callable[[str], None] = print,
              measure_switched: Callable[[str, float, float, int], np.ndarray] | None = None,
              until: float | None = None) -> Calibration:
    """The level (between `lightest` and `heaviest`, in the load's own unit; `integer` for a
    count) and control rate (the first of `rates` that works) at which fixed `full` misses and
    `smallest` fits; see the module docstring. `until`: time.monotonic() at which it stops;
    `measure` (and `measure_switched`) then take a `max_s` keyword."""
    cal = Calibration(load=type(load).__name__, level_name=load.level_name)
    t0 = time.monotonic()
    reasons = []
    short_s, long_s = (0.5, 8.0) if quick else (1.0, 10.0)
    long_cap_s = LONG_PROBE_S if quick else 1.5 * LONG_PROBE_S

    class OutOfTime(Exception):
        pass

    def run_probe(submodel, rate, level, n, switched=False, cap_s=SHORT_PROBE_S) -> Probe:
        how = measure_switched if switched and measure_switched is not None else measure
        kwargs = {}
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                raise OutOfTime
            kwargs["max_s"] = min(cap_s, left)
        lat = np.asarray(how(submodel, rate, level, n, **kwargs), float)
        if lat.size == 0:
            raise OutOfTime
        deadline = 1.0 / rate - margin_s
        p = Probe(rate, float(level), submodel, len(lat), float(np.percentile(lat, 50) * 1e3),
                  float(np.percentile(lat, 99) * 1e3), float(np.mean(lat > deadline)),
                  switched=how is not measure, cut_short=len(lat) < n)
        cal.probes.append(p)
        log(f"  {rate:g} Hz, {load.level_name} {level:g}{' switched' if p.switched else ''}: {submodel} "
            f"p50 {p.p50_ms:.2f} ms, p99 {p.p99_ms:.2f} ms, {p.miss_rate:.2%} of {p.n} late "
            f"(deadline {deadline * 1e3:.2f} ms){' (time limit)' if p.cut_short else ''}")
        return p

    try:
        return _search(cal, run_probe, load, rates, margin_s, smallest, lightest, heaviest, integer,
                       short_s, long_s, long_cap_s, reasons, t0)
    except OutOfTime:
        cal.out_of_time = True
        reasons.append("the calibration's time limit was reached")
        cal.reason = "no load level separates full and the smallest submodel: " + "; ".join(reasons)
        cal.seconds = time.monotonic() - t0
        return cal


def _search(cal, run_probe, load, rates, margin_s, smallest, lightest, heaviest, integer,
            short_s, long_s, long_cap_s, reasons, t0) -> Calibration:
    """calibrate's search over rates and levels (run_probe raises when time runs out)."""

    def between(a: float, b: float) -> float:
        mid = (a + b) / 2
        return float(round(mid)) if integer else mid

    def load_of(level: float) -> float:
        """Larger for a heavier load (a CPU quota is heavier at a lower level)."""
        return level if heaviest >= lightest else -level

    def heavier(a: float, b: float) -> bool:
        return load_of(a) > load_of(b)

    for rate in rates:
        deadline_ms = (1.0 / rate - margin_s) * 1e3
        if deadline_ms <= 0:
            reasons.append(f"{rate:g} Hz: the margin leaves no deadline")
            continue
        n_full = probe_size(rate, short_s, 30)

        def ratio(level, rate=rate, n=n_full, deadline_ms=deadline_ms) -> float:
            """full's median latency / the deadline at `level`."""
            return run_probe("full", rate, level, n).p50_ms / deadline_ms

        # 1. the level where full's median is FULL_AIM x the deadline (bisection; the load
        # is heavier towards `heaviest`)
        heavy, light = heaviest, lightest
        r_heavy = ratio(heavy)
        if r_heavy < FULL_MIN:
            reasons.append(f"{rate:g} Hz: even the heaviest load ({load.level_name} {heavy:g}) "
                           f"leaves full's median at {r_heavy:.2f} x the {deadline_ms:.1f} ms deadline")
            break  # a lower rate only lengthens the deadline: full would miss less still
        r_light = ratio(light)
        levels = {heavy: r_heavy, light: r_light}

        def bisect(lo: float, hi: float, target: float, steps: int, levels=levels, ratio=ratio) -> float:
            """The lightest level found between `lo` (full's ratio below `target`) and `hi` (at
            or above it) where the ratio is at least `target`; every probe joins `levels`."""
            for _ in range(steps):
                mid = between(lo, hi)
                if mid in (lo, hi):
                    break
                levels[mid] = ratio(mid)
                lo, hi = (mid, hi) if levels[mid] < target else (lo, mid)
            return hi

        aim = bisect(light, heavy, FULL_AIM, STEPS) if r_light < FULL_AIM else light

        def candidates(levels=levels, aim=aim, bisect=bisect):
            """The aimed level, then (only if asked for) one lighter one, bisected towards
            FULL_LIGHT between the probed levels around it."""
            yield aim
            below = [lv for lv, r in levels.items() if r < FULL_LIGHT and heavier(aim, lv)]
            if below:
                lighter = bisect(max(below, key=load_of),
                                 min((lv for lv, r in levels.items() if r >= FULL_LIGHT), key=load_of),
                                 FULL_LIGHT, 3)
                if lighter != aim:
                    yield lighter

        def judge(level, rate=rate, deadline_ms=deadline_ms) -> str:
            """"separated" (cal filled in), "smallest late" or "full fits" at `level`."""
            small = run_probe(smallest, rate, level, probe_size(rate, long_s, LONG_PROBE_N), switched=True,
                              cap_s=long_cap_s)
            late = round(small.miss_rate * small.n)
            late_upper = success_interval(late, small.n)[1]
            # A probe cut short by time cannot bound the late share to 1% (0 of 380 can): it
            # must then have no late inference at all, and a p99 with room. A full-length
            # probe is judged by the bound alone (a p99 rule beside it only refused levels by
            # hundredths of a millisecond where the bound was met).
            if small.cut_short:
                fits = late == 0 and small.p99_ms <= SMALLEST_P99 * deadline_ms
            else:
                fits = late_upper <= SMALLEST_MISS
            if fits:
                full = run_probe("full", rate, level, probe_size(rate, short_s * 2, 60),
                                 cap_s=2 * SHORT_PROBE_S)
                if full.p50_ms >= FULL_MIN * deadline_ms:
                    cut = (f" of {small.n}, up to {late_upper:.2%}: a time-limited probe"
                           if small.cut_short else "")
                    cal.separated, cal.rate_hz, cal.deadline_ms, cal.level = True, rate, deadline_ms, level
                    cal.reason = (f"{load.level_name} {level:g} at {rate:g} Hz: full p50 "
                                  f"{full.p50_ms:.2f} ms ({full.miss_rate:.0%} late), {smallest} p99 "
                                  f"{small.p99_ms:.2f} ms ({small.miss_rate:.2%} late{cut}) against a "
                                  f"{deadline_ms:.2f} ms deadline")
                    if rate != rates[0]:
                        cal.reason += f"; {rates[0]:g} Hz did not separate them ({'; '.join(reasons)})"
                    return "separated"
                reasons.append(f"{rate:g} Hz: at {load.level_name} {level:g} full's median came back "
                               f"at {full.p50_ms:.2f} ms, under {FULL_MIN} x the deadline")
                return "full fits"
            reasons.append(f"{rate:g} Hz: where full misses ({load.level_name} {level:g}), "
                           f"{smallest} itself has p99 {small.p99_ms:.2f} ms and "
                           f"{small.miss_rate:.2%} late (up to {late_upper:.2%}) against a "
                           f"{deadline_ms:.2f} ms deadline")
            return "smallest late"

        # 2. the smallest must fit there, or at one lighter level (at any heavier one its tail
        # is only longer)
        verdicts = {}
        for level in candidates():
            verdicts[level] = judge(level)
            if verdicts[level] == "separated":
                cal.seconds = time.monotonic() - t0
                return cal
        # 3. the smallest late at the aimed level, full fitting too often at the lighter one:
        # the answer lies between them (full's median is noisy over a hundred inferences)
        too_heavy = [lv for lv, v in verdicts.items() if v == "smallest late"]
        too_light = [lv for lv, v in verdicts.items() if v == "full fits"]
        if too_heavy and too_light:
            lo, hi = too_light[0], too_heavy[0]
            for _ in range(SPLIT_STEPS):
                mid = between(lo, hi)
                if mid in (lo, hi):
                    break
                verdict = judge(mid)
                if verdict == "separated":
                    cal.seconds = time.monotonic() - t0
                    return cal
                lo, hi = (mid, hi) if verdict == "full fits" else (lo, mid)
    cal.reason = "no load level separates full and the smallest submodel: " + "; ".join(reasons)
    cal.seconds = time.monotonic() - t0
    return cal
