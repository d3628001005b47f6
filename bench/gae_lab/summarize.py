"""The GAE lab's raw JSON as the compact CSV that results/ keeps: `python bench/gae_lab/summarize.py RAW.json ...
[--out DIR]`. Each file becomes DIR/<stem>.csv (a sweep also DIR/<stem>_best.csv), and its run facts (device,
versions, copy bandwidth, launch) a row of DIR/runs.csv.

- gae_floor.py's JSON: per size, the floors and every timing in us, and the ratios a reader looks for: each
  Triton call over its floor, the CleanRL loop over the Triton calls, and each over a copy of its bytes.
- gae_sweep.py's JSON: every candidate's time in us by tile (rows) and size (columns); and per size the fastest
  tile over the floor, the runner-up, how many candidates came within 2x of the floor, and the fastest tile of the
  op's kernel (what its table takes) where a run recorded it.
- gae_ptx.py's JSON: per tile, registers, local and shared bytes, the arguments written and each instruction's
  count.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

RUN_FACTS = ("tool", "device", "torch", "triton", "arch", "returns", "copy_tb_per_s", "launch_us",
             "launch_read_flush_us", "launch_graph_us", "sizes_left")
# (ratio column, numerator, denominator), each written where a run has both timings.
FLOOR_RATIOS = (("triton/floor", "triton_us", "floor_us"), ("graph/floor", "triton_graph_us", "floor_us"),
                ("adv/floor_adv", "triton_graph_adv_us", "floor_adv_us"),
                ("cleanrl/triton", "cleanrl_loop_us", "triton_us"),
                ("cleanrl/graph", "cleanrl_loop_us", "triton_graph_us"),
                ("triton/copy", "triton_us", "same_bytes_copy_us"),
                ("graph/copy", "triton_graph_us", "same_bytes_copy_us"))


def number(value: float | int | None, digits: int = 2) -> str:
    """A CSV cell: floats rounded to `digits` decimals, None empty."""
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def tool_of(report: dict) -> str:
    """Which lab script wrote `report`."""
    if "arch" in report:
        return "gae_ptx"
    rows = report.get("rows") or [{}]
    return "gae_sweep" if "configs_us" in rows[0] else "gae_floor"


def floor_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Per size: every timing (us) in the JSON's order, the floors first, the tile where recorded, then
    FLOOR_RATIOS."""
    timings = list(dict.fromkeys(key for row in report["rows"] for key in row if key.endswith("_us")))
    tiles = any("scan_tile" in row for row in report["rows"])
    ratios = [ratio for ratio in FLOOR_RATIOS if {ratio[1], ratio[2]} <= set(timings)]
    header = ["num_envs", "num_steps", *timings, *(["scan_tile"] if tiles else []), *(name for name, _, _ in ratios)]
    rows = []
    for row in report["rows"]:
        cells = [str(row["num_envs"]), str(row["num_steps"]), *(number(row.get(key)) for key in timings)]
        cells += [json.dumps(row.get("scan_tile"))] if tiles else []
        cells += [number(row[top] / row[bottom] if top in row and bottom in row else None, 3)
                  for _, top, bottom in ratios]
        rows.append(cells)
    return header, rows


def sweep_tables(report: dict) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    """Every candidate's time by tile and size; and per size the fastest tile against the floor."""
    sizes = [f"{row['num_envs']}x{row['num_steps']}" for row in report["rows"]]
    tiles = list(dict.fromkeys(tile for row in report["rows"] for tile in row["configs_us"]))
    times = [[tile, *(number(row["configs_us"].get(tile)) for row in report["rows"])] for tile in tiles]
    best_header = ["num_envs", "num_steps", "floor_us", "best", "best_us", "best/floor", "runner_up", "runner_up_us",
                   "within_2x_floor", "timed", "failed", "op_best", "op_best_us"]
    best = []
    for row in report["rows"]:
        floor, us = row["floor_us"], row["configs_us"]
        fastest, second = (sorted(us, key=us.get) + [None, None])[:2]
        within = sum(t <= 2 * floor for t in us.values()) if floor else None
        best.append([str(row["num_envs"]), str(row["num_steps"]), number(floor), fastest or "",
                     number(us.get(fastest)), number(us[fastest] / floor if fastest and floor else None, 3),
                     second or "", number(us.get(second)), number(within), str(len(us)), str(len(row["failed"])),
                     row.get("op_best", ""), number(us.get(row.get("op_best")))])
    return (["tile", *sizes], times), (best_header, best)


def ptx_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Per tile: registers, local and shared bytes, the arguments written, and each instruction's count."""
    instructions = sorted({name for row in report["rows"] for name in row["instructions"]})
    header = ["label", "tile", "registers", "local_bytes", "shared_bytes", "writes", *instructions]
    rows = [[row["label"], json.dumps(row["tile"]), str(row["registers"]), str(row["local_bytes"]),
             str(row["shared_bytes"]), "+".join(name.removesuffix("_ptr") for name in row["writes"]),
             *(str(row["instructions"].get(name, 0)) for name in instructions)] for row in report["rows"]]
    return header, rows


def run_facts(report: dict) -> dict[str, str]:
    facts = {key: report.get(key) for key in RUN_FACTS}
    facts["tool"] = tool_of(report)
    bandwidth = report.get("copy_bytes_per_s")
    facts["copy_tb_per_s"] = None if bandwidth is None else bandwidth / 1e12
    return {key: "" if value is None else number(value) for key, value in facts.items()}


def record_run(out: Path, name: str, facts: dict[str, str]) -> None:
    """Add or replace `name`'s row in out/runs.csv, rows sorted by file name."""
    path = out / "runs.csv"
    runs = {}
    if path.is_file():
        with path.open(newline="") as file:
            runs = {row["file"]: row for row in csv.DictReader(file)}
    runs[name] = {"file": name, **facts}
    write_csv(path, ["file", *RUN_FACTS], [[runs[key].get(column, "") for column in ["file", *RUN_FACTS]]
                                             for key in sorted(runs)])


def summarize(raw: Path, out: Path) -> list[Path]:
    """Write `raw`'s summaries under `out`; the paths written."""
    report = json.loads(raw.read_text())
    tool, written = tool_of(report), []
    if tool == "gae_sweep":
        times, best = sweep_tables(report)
        tables = {f"{raw.stem}.csv": times, f"{raw.stem}_best.csv": best}
    else:
        tables = {f"{raw.stem}.csv": ptx_table(report) if tool == "gae_ptx" else floor_table(report)}
    for name, (header, rows) in tables.items():
        write_csv(out / name, header, rows)
        written.append(out / name)
    record_run(out, f"{raw.stem}.csv", run_facts(report))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, nargs="+", help="JSON written by gae_floor.py, gae_sweep.py or gae_ptx.py")
    parser.add_argument("--out", type=Path, help="folder for the CSV files (default: each JSON's own)")
    args = parser.parse_args(argv)
    for raw in args.raw:
        out = args.out or raw.parent
        out.mkdir(parents=True, exist_ok=True)
        for path in summarize(raw, out):
            print(f"{raw} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
