"""What every bench in bench/ shares: its command line (``--quick``, ``--json PATH``), the
results table it prints, the flat JSON it writes, and this machine's latency-table entry.

A script run as ``python bench/<name>.py`` has bench/ on its path, so ``import benchlib``
needs nothing else (the tests get bench/ from ``pythonpath`` in setup.cfg).

    parser = benchlib.parser(__doc__)                  # --quick and --json PATH included
    args = parser.parse_args(argv)
    ...
    benchlib.print_table("title", ["col", ...], rows)
    benchlib.write_json(args.json, figures, __file__, argv)   # adds "command"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from embodied_stack.models.files import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
#: The latency tables the elastic node reads (one entry per device and runtime).
LATENCY_TABLE = REPO / "config" / "latency_tables.json"
QUICK_HELP = "reduced run (< 60 s here), same code path"


def parser(doc: str | None, quick: str | None = QUICK_HELP, json: bool = True) -> argparse.ArgumentParser:
    """An argument parser described by the first line of `doc` (a bench's module docstring)
    with the options every bench takes: ``--quick`` (help text `quick`; None: the bench has
    no reduced run) and ``--json PATH``."""
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    if quick:
        p.add_argument("--quick", action="store_true", help=quick)
    if json:
        p.add_argument("--json", metavar="PATH", help="write the figures as flat JSON")
    return p


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command as typed: ``python bench/<script's file name> <arguments>`` (the process's
    own arguments when `argv` is None; quoted where a shell needs it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", f"bench/{Path(script).name}", *args])


def clean(figures: dict, digits: int | None = None) -> dict:
    """`figures` ready for JSON: NaN and infinite floats become null, and floats are rounded
    to `digits` decimals when given (top-level values only; lists and dicts are kept)."""
    out = {}
    for k, v in figures.items():
        if isinstance(v, float):
            v = None if not math.isfinite(v) else (round(v, digits) if digits is not None else v)
        out[k] = v
    return out


def write_json(path: str | Path | None, figures: dict, script: str | None = None,
               argv: Sequence[str] | None = None, digits: int | None = None) -> dict:
    """Writes `figures` atomically to `path` as one flat JSON object (nothing when `path` is
    empty), with ``command`` (see command_line) added when `script` is given and the figures
    have none. Returns what was written."""
    out = clean(figures, digits)
    if script is not None and "command" not in out:
        out["command"] = command_line(script, argv)
    if path:
        atomic_write_json(path, out)
    return out


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
                left: int = 1, width: int | None = None, footer: str | None = None) -> None:
    """Prints a results table (rich): the first `left` columns left-aligned, the rest right;
    cells as given (format them before); `footer` printed under it."""
    from rich.console import Console
    from rich.table import Table

    rows = [[str(x) for x in r] for r in rows]
    table = Table(title=title)
    for i, c in enumerate(columns):
        # the label columns keep their longest cell on one line (up to 32 characters)
        widest = max((len(r[i]) for r in rows if i < len(r)), default=0)
        table.add_column(c, justify="left" if i < left else "right", min_width=min(widest, 32) if i < left else None)
    for r in rows:
        table.add_row(*r)
    console = Console(width=max(Console().width, width)) if width else Console()
    console.print(table)
    if footer:
        console.print(footer)


def read_records(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, one a line (a bench's cache of finished
    conditions; none when the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def this_machines_table(path: str | Path = LATENCY_TABLE, key: str | None = None) -> dict:
    """This machine's latency table entry (`key`: its device key, default this CPU's) from
    `path`, or exit saying how to measure it."""
    from embodied_stack.control.elastic.latency_table import device_key, read_latency_table

    key = key or device_key("cpu")
    try:
        return read_latency_table(str(path), key)
    except (KeyError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}; measure it: python bench/policy_latency.py --model "
                 f"models/default_vla --table-runtime onnxruntime --table {path}")


def model_id(directory: Path) -> str:
    """A short id of a model folder's weights, for caches kept per model: "<name>-<sha256[:12]>"."""
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    return f"{directory.name}-{digest[:12]}"


def source_id(*relative_paths: str) -> str:
    """A short id of the package source files a cached result depends on (paths relative to the
    package root), so a change to them starts a new cache rather than reusing stale rows."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in relative_paths:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    return f"code-{digest.hexdigest()[:12]}"
