"""Compare a benchmark run with a stored baseline: medians per benchmark, a table, exit 1 on a regression.

    python bench/check.py compare BASELINE.json CURRENT.json [--threshold 10] [--allow-missing]
    python bench/check.py gate MACHINE_DIR [--threshold 10] [--record-if-missing] [--allow-missing]
    python bench/check.py record MACHINE_DIR

`gate` is `make bench-check`: it compares MACHINE_DIR/latest.json with MACHINE_DIR/baseline.json, and where no
baseline is stored it says so and exits 2 (or, with --record-if-missing, stores the run as the baseline).
`record` is `make bench RECORD=1`: latest.json becomes baseline.json. Exit codes: 0 ok, 1 regression or a
benchmark missing from the run, 2 no baseline or unusable input. Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

BASELINE_NAME = "baseline.json"
LATEST_NAME = "latest.json"
# Machine facts that must agree for medians to be comparable (the folder name already encodes most of them).
MATCHING_MACHINE_KEYS = ("bench_machine_id", "bench_profile")


class CheckError(Exception):
    """Input that cannot be compared (missing file, not a pytest-benchmark JSON, different machine)."""


@dataclass(frozen=True)
class Row:
    name: str
    baseline: float | None  # median seconds
    current: float | None
    status: str  # ok, faster, REGRESSION, MISSING, new

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current / self.baseline - 1.0


def load(path: Path) -> dict:
    """A pytest-benchmark JSON file, checked to hold benchmarks with medians."""
    if not path.is_file():
        raise CheckError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckError(f"{path}: not JSON ({error})") from error
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not benchmarks:
        raise CheckError(f"{path}: holds no benchmarks (write it with pytest --benchmark-enable --benchmark-json)")
    for bench in benchmarks:
        if "fullname" not in bench or "median" not in bench.get("stats", {}):
            raise CheckError(f"{path}: benchmark {bench.get('name', '?')!r} has no fullname or stats.median")
    return data


def medians(data: dict) -> dict[str, float]:
    return {bench["fullname"]: float(bench["stats"]["median"]) for bench in data["benchmarks"]}


def check_same_machine(baseline: dict, current: dict) -> None:
    for key in MATCHING_MACHINE_KEYS:
        old, new = baseline.get("machine_info", {}).get(key), current.get("machine_info", {}).get(key)
        if old != new:
            raise CheckError(f"baseline and run differ in machine_info[{key!r}]: {old!r} vs {new!r}; "
                             "medians are only comparable on the same machine, versions and profile")


def compare(baseline: dict, current: dict, threshold_pct: float) -> list[Row]:
    """One row per benchmark in either file; a median slower than baseline * (1 + threshold) is a regression."""
    old, new = medians(baseline), medians(current)
    rows = []
    for name in sorted(old.keys() | new.keys()):
        b, c = old.get(name), new.get(name)
        if c is None:
            status = "MISSING"
        elif b is None:
            status = "new"
        elif c > b * (1 + threshold_pct / 100):
            status = "REGRESSION"
        elif c < b / (1 + threshold_pct / 100):
            status = "faster"
        else:
            status = "ok"
        rows.append(Row(name, b, c, status))
    return rows


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.1f} ns"


def format_table(rows: list[Row], threshold_pct: float) -> str:
    width = max(len("benchmark"), *(len(r.name) for r in rows))
    lines = [f"{'benchmark':<{width}}  {'baseline':>12}  {'current':>12}  {'change':>8}  status "
             f"(regression: median > {threshold_pct:g}% slower)"]
    for r in rows:
        change = "-" if r.change is None else f"{r.change:+.1%}"
        lines.append(f"{r.name:<{width}}  {_fmt_time(r.baseline):>12}  {_fmt_time(r.current):>12}  {change:>8}  "
                     f"{r.status}")
    return "\n".join(lines)


def run_compare(baseline_path: Path, current_path: Path, threshold_pct: float, allow_missing: bool) -> int:
    baseline, current = load(baseline_path), load(current_path)
    check_same_machine(baseline, current)
    rows = compare(baseline, current, threshold_pct)
    print(f"baseline: {baseline_path} ({baseline.get('datetime', '?')})\ncurrent:  {current_path} "
          f"({current.get('datetime', '?')})\n")
    print(format_table(rows, threshold_pct))
    regressions = [r for r in rows if r.status == "REGRESSION"]
    missing = [r for r in rows if r.status == "MISSING"]
    failed = bool(regressions) or (bool(missing) and not allow_missing)
    print()
    if regressions:
        print(f"FAIL: {len(regressions)} benchmark(s) regressed by more than {threshold_pct:g}% (median).")
    if missing:
        verdict = "FAIL" if not allow_missing else "note"
        print(f"{verdict}: {len(missing)} baseline benchmark(s) did not run (renamed, skipped or deselected); "
              "re-record the baseline if that is intended, or pass --allow-missing for a subset run.")
    if not failed:
        print(f"OK: no median regressed by more than {threshold_pct:g}% ({len(rows)} benchmarks).")
    return 1 if failed else 0


def run_gate(machine_dir: Path, threshold_pct: float, record_if_missing: bool, allow_missing: bool) -> int:
    baseline, latest = machine_dir / BASELINE_NAME, machine_dir / LATEST_NAME
    if not baseline.is_file():
        if record_if_missing:
            return run_record(machine_dir)
        print(f"No stored baseline for this machine: {baseline} does not exist, so a run has nothing to be "
              "compared with.\nRecord one with `make bench-check RECORD=1` (or `make bench RECORD=1`), then commit "
              "it.", file=sys.stderr)
        return 2
    return run_compare(baseline, latest, threshold_pct, allow_missing)


def run_record(machine_dir: Path) -> int:
    """Store latest.json as baseline.json without the per-round timings (`stats.data`): the summary statistics
    are what a check reads, and the raw rounds would make a committed baseline megabytes."""
    latest, baseline = machine_dir / LATEST_NAME, machine_dir / BASELINE_NAME
    data = load(latest)
    for bench in data["benchmarks"]:
        bench["stats"].pop("data", None)
    baseline.write_text(json.dumps(data, indent=2) + "\n")
    print(f"Recorded {len(data['benchmarks'])} benchmarks as this machine's baseline: {baseline}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    threshold = dict(type=float, default=10.0, help="allowed median slow-down in percent (default 10)")
    allow_missing = dict(action="store_true", help="baseline benchmarks absent from the run do not fail")
    p = sub.add_parser("compare", help="compare two pytest-benchmark JSON files")
    p.add_argument("baseline", type=Path)
    p.add_argument("current", type=Path)
    p.add_argument("--threshold", **threshold)
    p.add_argument("--allow-missing", **allow_missing)
    p = sub.add_parser("gate", help="compare MACHINE_DIR/latest.json with MACHINE_DIR/baseline.json")
    p.add_argument("machine_dir", type=Path)
    p.add_argument("--threshold", **threshold)
    p.add_argument("--record-if-missing", action="store_true", help="no baseline yet: store this run as it")
    p.add_argument("--allow-missing", **allow_missing)
    p = sub.add_parser("record", help="store MACHINE_DIR/latest.json as MACHINE_DIR/baseline.json")
    p.add_argument("machine_dir", type=Path)
    args = parser.parse_args(argv)
    if getattr(args, "threshold", 0) < 0:
        parser.error(f"--threshold must be >= 0, got {args.threshold}")
    try:
        if args.command == "compare":
            return run_compare(args.baseline, args.current, args.threshold, args.allow_missing)
        if args.command == "gate":
            return run_gate(args.machine_dir, args.threshold, args.record_if_missing, args.allow_missing)
        return run_record(args.machine_dir)
    except CheckError as error:
        print(f"bench check: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
