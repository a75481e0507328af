#!/usr/bin/env python3
"""Two models on the same evaluation seeds: success of each, the seeds one solves and the other
does not, and an exact McNemar test of the difference.

    python bench/paired_success.py BASE_EVAL.json NEW_EVAL.json [--json PATH]

Both files are `embodied-stack eval --json` outputs over the same seed range (the script checks
it). Two rates on the same 100 seeds share most of their noise (the scene decides most
outcomes), so the paired test is the fair one: only seeds where the models disagree carry
information. JSON keys per ``<submodel>_<world>``: ``base``, ``new`` (success rates),
``new_solves_base_fails``, ``base_solves_new_fails``, ``mcnemar_p`` (two-sided, exact binomial
on the disagreeing seeds), ``difference_ci95`` (new - base, the paired Wald 95% interval),
``new_within_base_ci95`` (the new rate inside the base's Wilson 95% interval: does a second
training run reproduce the first?); and the seeds, ``episodes`` per world from ``first_seed``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import benchlib


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(as or more lopsided split of the b + c disagreeing
    seeds) under Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_interval(new_only: int, base_only: int, n: int) -> list[float]:
    """Wald 95% interval of new - base success on `n` paired seeds, from the seeds only one
    solves: each seed's difference is +1, -1 or 0, and the interval is the mean's."""
    mean = (new_only - base_only) / n
    if n < 2:
        return [float("nan"), float("nan")]
    var = ((new_only + base_only) / n - mean ** 2) * n / (n - 1)  # (sample variance)
    half = 1.959964 * math.sqrt(max(var, 0.0) / n)
    return [mean - half, mean + half]


def compare(base: dict, new: dict) -> dict:
    for key in ("episodes", "first_seed"):
        if base.get(key) != new.get(key):
            raise ValueError(f"the two evaluations differ in {key}: {base.get(key)} vs {new.get(key)}; "
                             "a paired comparison needs the same seeds")
    out = {}
    for name in sorted(set(base["details"]) & set(new["details"])):
        b, n = base["details"][name], new["details"][name]
        b_fail, n_fail = set(b["failed_seeds"]), set(n["failed_seeds"])
        fixed, broke = len(b_fail - n_fail), len(n_fail - b_fail)
        out[name] = {"base": b["success"], "new": n["success"], "episodes": b["episodes"],
                     "new_solves_base_fails": fixed, "base_solves_new_fails": broke,
                     "mcnemar_p": mcnemar_exact(fixed, broke),
                     "difference_ci95": paired_interval(fixed, broke, b["episodes"]),
                     "new_within_base_ci95": bool(b["ci95"][0] <= n["success"] <= b["ci95"][1])}
    if not out:
        raise ValueError("no submodel/world appears in both evaluations")
    return out


def main(argv=None) -> int:
    parser = benchlib.parser(__doc__, quick=None)  # instant: nothing to cut short
    parser.add_argument("base", type=Path, help="eval JSON of the reference model")
    parser.add_argument("new", type=Path, help="eval JSON of the model compared with it")
    args = parser.parse_args(argv)
    try:
        base = json.loads(args.base.read_text())
        result = compare(base, json.loads(args.new.read_text()))
    except (OSError, ValueError, KeyError) as e:
        print(f"paired_success: {e}", file=sys.stderr)
        return 2
    benchlib.print_table(f"{args.new} vs {args.base} (same seeds)",
                         ("submodel_world", "base", "new", "new only", "base only", "McNemar p",
                          "new in base's 95%"),
                         [(name, f"{r['base']:.0%}", f"{r['new']:.0%}", r["new_solves_base_fails"],
                           r["base_solves_new_fails"], f"{r['mcnemar_p']:.2f}",
                           "yes" if r["new_within_base_ci95"] else "no") for name, r in result.items()])
    benchlib.write_json(args.json, {"base": str(args.base), "new": str(args.new), "episodes": base["episodes"],
                                    "first_seed": base["first_seed"], **result}, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
