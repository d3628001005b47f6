"""Compare a benchmark run with a stored baseline, each median relative to the calibration workload timed beside
it: a table, exit 1 on a regression.

    python bench/check.py compare BASELINE.json CURRENT.json [--threshold 10] [--allow-missing] [--absolute]
    python bench/check.py gate MACHINE_DIR [--threshold 10] [--record-if-missing] [--allow-missing] [--absolute]
    python bench/check.py record MACHINE_DIR

Every benchmark times a fixed calibration workload between its rounds (benchlib.InterleavedCalibration, into
`extra_info.calibration_median_s`). A benchmark's ratio is its median over that calibration median, and it
regresses when its ratio grew by more than the threshold: load that slows the machine while a benchmark runs
slows its calibration as much, and fails nothing. `--absolute` compares the medians themselves instead. The
spread printed beside each change is the IQRs over the medians behind it, combined: a change within it is
noise. The calibration benchmark's own row (bench/test_calibration.py) gives the machine's speed today.

`gate` is `make bench-check`: it compares MACHINE_DIR/latest.json with MACHINE_DIR/baseline.json, and where no
baseline is stored it says so and exits 2 (or, with --record-if-missing, stores the run as the baseline).
`record` is `make bench RECORD=1`: latest.json becomes baseline.json. Before `make bench-check` fails a benchmark
it runs it once more (`regressed`, then `keep-best` keeps the better of the two timings): a real regression is
slow both times, one slow stretch of a shared machine is not. Exit codes: 0 ok, 1 regression or a
benchmark missing from the run, 2 no baseline or unusable input (a run without calibration medians among them).
Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

BASELINE_NAME = "baseline.json"
LATEST_NAME = "latest.json"
CALIBRATION = "test_calibration"  # the calibration workload's own benchmark (bench/test_calibration.py)
# Machine facts that must agree for medians to be comparable (the folder name already encodes most of them).
MATCHING_MACHINE_KEYS = ("bench_machine_id", "bench_profile")


class CheckError(Exception):
    """Input that cannot be compared (missing file, not a pytest-benchmark JSON, different machine, no
    calibration medians to compare relative to)."""


@dataclass(frozen=True)
class Stats:
    """What the check reads of one benchmark in one run."""

    median: float  # seconds
    iqr: float  # seconds; 0 where the JSON has none
    calibration: Stats | None = None  # the calibration workload timed between this benchmark's rounds

    @property
    def relative_spread(self) -> float:
        return self.iqr / self.median if self.median > 0 else 0.0


@dataclass(frozen=True)
class Row:
    name: str
    baseline: float | None  # median seconds
    current: float | None
    status: str  # ok, faster, REGRESSION, MISSING, new, calibration
    change: float | None = None  # of the ratio to the calibration (of the median with --absolute); None if absent
    spread: float | None = None  # the change's relative spread: the IQR/median of every median behind it


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


def _stats(bench: dict) -> Stats:
    info = bench.get("extra_info") or {}
    calibration = info.get("calibration_median_s")
    return Stats(float(bench["stats"]["median"]), float(bench["stats"].get("iqr") or 0.0),
                 None if calibration is None else Stats(float(calibration), float(info.get("calibration_iqr_s") or 0)))


def stats(data: dict) -> dict[str, Stats]:
    """Each benchmark's median, IQR and calibration, by full name."""
    return {bench["fullname"]: _stats(bench) for bench in data["benchmarks"]}


def require_calibration(named: dict[str, Stats], which: str) -> None:
    """Fail plainly where benchmarks of the `which` run ("baseline" or "run") have no calibration median."""
    if lacking := [name for name, stat in named.items() if stat.calibration is None]:
        fix = ("re-record it with `make bench RECORD=1` (it predates the calibration)" if which == "baseline"
               else "time it with bench/benchlib.py's measure, which times the calibration between its rounds")
        raise CheckError(f"the {which} has no calibration median (extra_info.calibration_median_s) for "
                         f"{len(lacking)} of {len(named)} benchmarks, e.g. {lacking[0]}, and every median is "
                         f"compared relative to it: {fix}, or compare absolute medians with --absolute")


def combined_spread(*parts: Stats) -> float:
    """Relative spread of a product or quotient of medians: their IQR/median added in quadrature."""
    return math.sqrt(sum(part.relative_spread ** 2 for part in parts))


def status_of(change: float, threshold_pct: float) -> str:
    if change > threshold_pct / 100:
        return "REGRESSION"
    if (1 + change) * (1 + threshold_pct / 100) < 1:
        return "faster"
    return "ok"


def check_same_machine(baseline: dict, current: dict) -> None:
    for key in MATCHING_MACHINE_KEYS:
        old, new = baseline.get("machine_info", {}).get(key), current.get("machine_info", {}).get(key)
        if old != new:
            raise CheckError(f"baseline and run differ in machine_info[{key!r}]: {old!r} vs {new!r}; "
                             "medians are only comparable on the same machine, versions and profile")


def compare(baseline: dict, current: dict, threshold_pct: float, absolute: bool = False) -> list[Row]:
    """One row per benchmark in either file. A benchmark regresses when its median over its calibration median
    (its median, with `absolute`) is more than threshold percent above the baseline's; the calibration
    benchmark's own row gives how much slower or faster the machine ran."""
    old, new = stats(baseline), stats(current)
    if not absolute:
        require_calibration(old, "baseline")
        require_calibration(new, "run")
    rows = []
    for name in sorted(old.keys() | new.keys()):
        b, c = old.get(name), new.get(name)
        machine_speed = not absolute and name.rpartition("::")[2] == CALIBRATION
        if b is None or c is None:
            rows.append(Row(name, b and b.median, c and c.median, "MISSING" if c is None else "new"))
        elif absolute or machine_speed:
            change = c.median / b.median - 1
            status = "calibration" if machine_speed else status_of(change, threshold_pct)
            rows.append(Row(name, b.median, c.median, status, change, combined_spread(b, c)))
        else:
            change = (c.median / c.calibration.median) / (b.median / b.calibration.median) - 1
            rows.append(Row(name, b.median, c.median, status_of(change, threshold_pct), change,
                            combined_spread(b, c, b.calibration, c.calibration)))
    return rows


def exit_code(rows: list[Row], allow_missing: bool) -> int:
    """1 where a benchmark regressed, or one of the baseline's did not run (unless allowed), else 0."""
    missing = any(r.status == "MISSING" for r in rows) and not allow_missing
    return 1 if missing or any(r.status == "REGRESSION" for r in rows) else 0


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.1f} ns"


def format_table(rows: list[Row], threshold_pct: float, absolute: bool = False) -> str:
    measure = "median" if absolute else "median / its calibration median"
    width = max(len("benchmark"), *(len(r.name) for r in rows))
    lines = [f"{'benchmark':<{width}}  {'baseline':>12}  {'current':>12}  {'change':>8}  {'spread':>7}  status "
             f"(regression: {measure} > {threshold_pct:g}% up)"]
    for r in rows:
        change = "-" if r.change is None else f"{r.change:+.1%}"
        spread = "-" if r.spread is None else f"±{r.spread:.1%}"
        lines.append(f"{r.name:<{width}}  {_fmt_time(r.baseline):>12}  {_fmt_time(r.current):>12}  {change:>8}  "
                     f"{spread:>7}  {r.status}")
    return "\n".join(lines)


def run_compare(baseline_path: Path, current_path: Path, threshold_pct: float, allow_missing: bool,
                absolute: bool = False) -> int:
    baseline, current = load(baseline_path), load(current_path)
    check_same_machine(baseline, current)
    rows = compare(baseline, current, threshold_pct, absolute)
    print(f"baseline: {baseline_path} ({baseline.get('datetime', '?')})\ncurrent:  {current_path} "
          f"({current.get('datetime', '?')})\n")
    print(format_table(rows, threshold_pct, absolute))
    regressions = [r for r in rows if r.status == "REGRESSION"]
    missing = [r for r in rows if r.status == "MISSING"]
    measure = "median" if absolute else "median relative to the calibration"
    print()
    if speed := next((r for r in rows if r.status == "calibration"), None):
        print(f"calibration workload: {speed.change:+.1%} against the baseline's (the machine's speed today); "
              "every other change is relative to the calibration timed between that benchmark's rounds.")
    if regressions:
        print(f"FAIL: {len(regressions)} benchmark(s) regressed by more than {threshold_pct:g}% ({measure}).")
    if missing:
        verdict = "FAIL" if not allow_missing else "note"
        print(f"{verdict}: {len(missing)} baseline benchmark(s) did not run (renamed, skipped or deselected); "
              "re-record the baseline if that is intended, or pass --allow-missing for a subset run.")
    failed = exit_code(rows, allow_missing)
    if not failed:
        print(f"OK: no {measure} regressed by more than {threshold_pct:g}% ({len(rows)} benchmarks).")
    return failed


def run_gate(machine_dir: Path, threshold_pct: float, record_if_missing: bool, allow_missing: bool,
             absolute: bool = False) -> int:
    baseline, latest = machine_dir / BASELINE_NAME, machine_dir / LATEST_NAME
    if not baseline.is_file():
        if record_if_missing:
            return run_record(machine_dir)
        print(f"No stored baseline for this machine: {baseline} does not exist, so a run has nothing to be "
              "compared with.\nRecord one with `make bench-check RECORD=1` (or `make bench RECORD=1`), then commit "
              "it.", file=sys.stderr)
        return 2
    return run_compare(baseline, latest, threshold_pct, allow_missing, absolute)


def regressed(machine_dir: Path, threshold_pct: float, absolute: bool = False) -> list[str]:
    """The full names of the benchmarks that regressed in MACHINE_DIR/latest.json: `make bench-check` runs them
    once more before it fails them, since on a shared machine one slow stretch can pass any threshold."""
    rows = compare(load(machine_dir / BASELINE_NAME), load(machine_dir / LATEST_NAME), threshold_pct, absolute)
    return [row.name for row in rows if row.status == "REGRESSION"]


def ratio(bench: dict, absolute: bool) -> float:
    median = float(bench["stats"]["median"])
    return median if absolute else median / float(bench["extra_info"]["calibration_median_s"])


def keep_best(machine_dir: Path, rerun: Path, absolute: bool = False) -> int:
    """Replace each benchmark of latest.json that `rerun` timed again by the better of its two runs (the lower
    median, relative to its calibration unless `absolute`): a real regression is slow in both."""
    latest_path = machine_dir / LATEST_NAME
    latest, again = load(latest_path), load(rerun)
    by_name = {bench["fullname"]: bench for bench in again["benchmarks"]}
    kept = 0
    for index, bench in enumerate(latest["benchmarks"]):
        other = by_name.get(bench["fullname"])
        if other is not None and ratio(other, absolute) < ratio(bench, absolute):
            latest["benchmarks"][index] = other
            kept += 1
    latest_path.write_text(json.dumps(latest, indent=2) + "\n")
    print(f"Re-ran {len(by_name)} benchmark(s); the second run was faster for {kept}.")
    return 0


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
    absolute = dict(action="store_true", help="compare medians themselves, not relative to the calibration")
    p = sub.add_parser("compare", help="compare two pytest-benchmark JSON files")
    p.add_argument("baseline", type=Path)
    p.add_argument("current", type=Path)
    p.add_argument("--threshold", **threshold)
    p.add_argument("--allow-missing", **allow_missing)
    p.add_argument("--absolute", **absolute)
    p = sub.add_parser("gate", help="compare MACHINE_DIR/latest.json with MACHINE_DIR/baseline.json")
    p.add_argument("machine_dir", type=Path)
    p.add_argument("--threshold", **threshold)
    p.add_argument("--record-if-missing", action="store_true", help="no baseline yet: store this run as it")
    p.add_argument("--allow-missing", **allow_missing)
    p.add_argument("--absolute", **absolute)
    p = sub.add_parser("record", help="store MACHINE_DIR/latest.json as MACHINE_DIR/baseline.json")
    p.add_argument("machine_dir", type=Path)
    p = sub.add_parser("regressed", help="print the full names of the benchmarks that regressed in latest.json")
    p.add_argument("machine_dir", type=Path)
    p.add_argument("--threshold", **threshold)
    p.add_argument("--absolute", **absolute)
    p = sub.add_parser("keep-best", help="keep the better of latest.json's and a re-run's timing of each benchmark")
    p.add_argument("machine_dir", type=Path)
    p.add_argument("rerun", type=Path)
    p.add_argument("--absolute", **absolute)
    args = parser.parse_args(argv)
    if getattr(args, "threshold", 0) < 0:
        parser.error(f"--threshold must be >= 0, got {args.threshold}")
    try:
        if args.command == "compare":
            return run_compare(args.baseline, args.current, args.threshold, args.allow_missing, args.absolute)
        if args.command == "gate":
            return run_gate(args.machine_dir, args.threshold, args.record_if_missing, args.allow_missing,
                            args.absolute)
        if args.command == "regressed":
            print("\n".join(regressed(args.machine_dir, args.threshold, args.absolute)))
            return 0
        if args.command == "keep-best":
            return keep_best(args.machine_dir, args.rerun, args.absolute)
        return run_record(args.machine_dir)
    except CheckError as error:
        print(f"bench check: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
