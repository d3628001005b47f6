"""Every candidate scan-kernel tile at every GAE size, against the floor: `python bench/gae_lab/gae_sweep.py
[--json OUT] [--advantages-only] [--write-tiles kernels/gae_tiles.py]`.

What gae_floor.py cannot say: how fast the scan kernel can be at a size, and which tile gets there. Per
size, every candidate tile whose time tile fits the rollout (BLOCK_STEPS at most T rounded up to a power of
two) is checked against the float64 reference, captured alone in a CUDA graph and timed as gae_floor.py times
`triton_graph` (do_bench median, L2 flushed): kernel time plus one graph launch. The table shows the fastest
tile and how many are within 2x of the floor measured in the same run; `--write-tiles` writes the fastest tile
the op's kernel runs (`op_tile`) per size as the op's tile table, keeping the table's tiles for sizes not swept (so
`--sizes` can re-sweep a few). The candidates with time ascending along the tile run the lab's own kernel
(ascending_kernel.py): timed beside the op's, never written to its table.
Both files are rewritten after every size: a sweep stopped by its time limit on a lent GPU still leaves the sizes
it finished. `--advantages-only` times the kernel as the trainer launches it (`returns=False`: advantages written
alone), against that op's floor; the table then serves both calls.

On CPU (TRITON_INTERPRET=1 set before launch) it only checks every candidate through the interpreter at small
sizes: the tiles' masking and chunking are right whatever the timings would be. There, candidates that differ in
num_warps or num_stages alone run one program (the interpreter has neither), checked once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import triton

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # the lab, then bench/
import benchlib  # noqa: E402
from gae_floor import (CUDA_SIZES, GAMMA, LAMBDA, copy_bandwidth, gae_bytes, launch_us, parse_sizes,  # noqa: E402
                       time_us)

from ascending_kernel import ascending_config, ascending_kernel  # noqa: E402

from recurrent_ppo.kernels.gae import gae_reference, launch_scan_kernel, scan_config, scan_kernel  # noqa: E402

# T=33 fits 32- and 64-step tiles; 520 crosses every tile's chunk boundary; 3 envs leave part of every env tile
# of 2 or more envs masked.
CPU_SIZES = [(3, 33), (3, 520)]
# (BLOCK_ENVS, BLOCK_STEPS, num_warps, num_stages or None). ASCENDING_TILES: the tiles within 10% of the
# fastest at some size in the stored descending-only sweeps (results/, docs/gae.md), and tiles that hold one env
# per warp whatever its length, so the scan over an env's segments stays within a warp. DESCENDING_TILES: those
# the stored tile table (kernels/gae_tiles.py) picked from them.
ASCENDING_TILES = [
    (1, 32, 1, None), (2, 32, 1, None), (4, 32, 1, None), (8, 32, 1, None), (8, 32, 1, 1), (8, 32, 2, None),
    (16, 32, 2, None), (1, 64, 1, None), (2, 64, 1, None), (4, 64, 1, None), (1, 128, 1, None), (1, 128, 1, 1),
    (1, 128, 2, None), (2, 128, 2, None), (4, 128, 4, None), (1, 256, 4, None), (1, 512, 4, None), (2, 512, 8, None),
    (1, 256, 1, None), (1, 512, 1, None), (4, 256, 4, None), (4, 512, 4, None), (16, 32, 4, None), (8, 64, 4, None),
]
DESCENDING_TILES = [(1, 32, 1, None), (2, 32, 1, None), (4, 32, 1, None), (2, 64, 1, None), (1, 128, 1, None),
                    (1, 128, 1, 1), (1, 512, 4, None)]
# (*tile, NEXT_FROM_TILE, ASCENDING, WHERE_TRUNCATED): both V(s_{t+1}) sources; truncated_values read whole only
# with V shifted out of the tile (ascending), the variant with the fewest loads. The descending candidates are the
# op's kernel itself (`op_tile`), the ascending ones the lab's (ascending_kernel.py).
CANDIDATES = [(*tile, next_from_tile, False, True) for tile in DESCENDING_TILES for next_from_tile in (False, True)]
CANDIDATES += [(*tile, next_from_tile, True, where_truncated) for tile in ASCENDING_TILES
               for next_from_tile, where_truncated in ((False, True), (True, True), (True, False))]
REP_MS = 60  # per candidate: ~600 timed calls at ~100 us each (the L2 flush included); the median is steady


def fits(candidate: tuple, num_steps: int) -> bool:
    """A time tile longer than the rollout only scans masked lanes: never faster than one that fits."""
    return candidate[1] <= max(16, triton.next_power_of_2(num_steps))


def label(envs: int, steps: int, warps: int, stages: int | None, next_from_tile: bool, ascending: bool,
          where_truncated: bool) -> str:
    """4x32/w1 for a tile of 4 envs x 32 steps on 1 warp; /s1: 1 stage, /g: V(s_{t+1}) from the tile, /a: time
    ascending along it, /tv: truncated_values read whole."""
    return (f"{envs}x{steps}/w{warps}" + ("" if stages is None else f"/s{stages}") + ("/g" if next_from_tile else "")
            + ("/a" if ascending else "") + ("" if where_truncated else "/tv"))


def op_tile(candidate: tuple) -> tuple | None:
    """The op's tile (kernels/gae_tiles.py's form) that launches `candidate`, or None for the lab's variants."""
    envs, steps, warps, stages, next_from_tile, ascending, where_truncated = candidate
    return None if ascending or not where_truncated else (envs, steps, warps, stages, next_from_tile)


def candidate_kernel(candidate: tuple):
    """The kernel that runs `candidate`, for `launch_scan_kernel`: the op's (kernels/gae.py) at its tiles, the
    lab's ascending kernel for the others."""
    if (tile := op_tile(candidate)) is not None:
        return scan_kernel([scan_config(*tile)])
    *tile, next_from_tile, ascending, where_truncated = candidate
    if not ascending:
        raise ValueError(f"{label(*candidate)}: no kernel reads truncated_values whole with time descending")
    return ascending_kernel([ascending_config(*tile, next_from_tile, where_truncated)])


def interpreted_program(candidate: tuple) -> tuple:
    """What the Triton interpreter runs of a candidate: its tile and variant; num_warps and num_stages change
    nothing there."""
    envs, steps, _warps, _stages, *variant = candidate
    return envs, steps, *variant


def runner(kernel, inputs: dict[str, torch.Tensor], out: tuple) -> Callable[[], tuple]:
    def run() -> tuple:
        launch_scan_kernel(kernel, **inputs, gamma=GAMMA, lam=LAMBDA, out=out)
        return out
    return run


def mismatch(out: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor]) -> str | None:
    """How `out` differs from the float64 reference, or None where it matches."""
    for got, want, what in zip(out, expected, ("advantages", "returns")):
        if got is None:  # advantages only
            continue
        try:
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
        except AssertionError as error:
            return f"{what}: {str(error).splitlines()[0]}"
    return None


def time_candidate(candidate: tuple, inputs: dict[str, torch.Tensor], expected: tuple, device: torch.device,
                   returns: bool = True) -> float:
    """Check one config (eagerly, then replayed from a CUDA graph on CUDA) and time its replays; None on CPU."""
    poisoned = lambda: torch.full_like(inputs["rewards"], float("nan"))  # noqa: E731
    out = (poisoned(), poisoned() if returns else None)
    run = runner(candidate_kernel(candidate), inputs, out)
    if (error := mismatch(run(), expected)) is not None:
        raise AssertionError(error)
    if device.type != "cuda":
        return None
    for tensor in out:
        if tensor is not None:
            tensor.fill_(float("nan"))
    replay = benchlib.cuda_graphed(run)
    if (error := mismatch(replay(), expected)) is not None:
        raise AssertionError(f"graph replay: {error}")
    return time_us(replay, device, rep_ms=REP_MS)


def sweep_size(n: int, t: int, device: torch.device, launch: float | None, bandwidth: float | None,
               returns: bool = True) -> dict:
    """One size's row: `best`, the fastest candidate, and `op_best`, the fastest the op's kernel runs (what its
    table takes). A config that fails (wrong result, out of resources) is recorded under `failed` and the sweep
    goes on: one bad tile must not cost the rest of a lent GPU's minutes."""
    inputs = benchlib.gae_inputs(n, t, device)
    floor = max(launch, gae_bytes(inputs, returns) / bandwidth * 1e6) if bandwidth else None
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    expected = gae_reference(**as_double, gamma=GAMMA, lam=LAMBDA)
    row = {"num_envs": n, "num_steps": t, "floor_us": floor, "checked": [], "configs_us": {}, "failed": {}}
    outcomes = {}  # each run's time (None on CPU) or error; on CPU, by the program the interpreter runs
    for candidate in (c for c in CANDIDATES if fits(c, t)):
        name = label(*candidate)
        run = candidate if device.type == "cuda" else interpreted_program(candidate)
        if run not in outcomes:
            try:
                outcomes[run] = time_candidate(candidate, inputs, expected, device, returns)
            except Exception as error:  # noqa: BLE001 - recorded, reported, and the exit status says so
                outcomes[run] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if isinstance(us := outcomes[run], str):
            row["failed"][name] = us
            continue
        row["checked"].append(name)
        if us is not None:
            row["configs_us"][name] = us
    if row["configs_us"]:
        row["best"] = min(row["configs_us"], key=row["configs_us"].get)
        candidates = by_label()
        op_times = {name: us for name, us in row["configs_us"].items() if op_tile(candidates[name]) is not None}
        if op_times:
            row["op_best"] = min(op_times, key=op_times.get)
    return row


def by_label() -> dict[str, tuple]:
    """Every candidate by its label."""
    return {label(*candidate): candidate for candidate in CANDIDATES}


TILES_MODULE = '''"""The GAE scan kernel's tile per size: (num_envs, num_steps) -> (BLOCK_ENVS, BLOCK_STEPS, num_warps,
num_stages, NEXT_FROM_TILE), num_stages None for Triton's default.
`bench/gae_lab/gae_sweep.py --write-tiles` rewrites this file: it times every candidate tile at each size and
keeps the fastest the op's kernel runs. Other sizes take the nearest size's tile.

Measured on: {measured_on}.
"""

TILES = {{
{tiles}}}
'''


def tiles_module(rows: list[dict], measured_on: str, before: dict | None = None) -> str:
    """gae_tiles.py's text: the table `before` (size -> tile) in its order, each swept size's tile replaced by
    its fastest candidate the op's kernel runs, `op_best` (new sizes last)."""
    candidates = by_label()
    tiles = dict(before or {}) | {(row["num_envs"], row["num_steps"]): op_tile(candidates[row["op_best"]])
                                  for row in rows}
    lines = "".join(f"    {size}: {tile},\n" for size, tile in tiles.items())
    return TILES_MODULE.format(measured_on=measured_on, tiles=lines)


def write_tiles(path: Path, rows: list[dict], measured_on: str, sizes_left: int) -> None:
    """Write the op's table with the swept rows' tiles; the op's current table keeps every other size. The
    "Measured on" line says how much of it this sweep measured."""
    from recurrent_ppo.kernels.gae_tiles import TILES as before  # as this process imported it: not rewritten

    swept = {(row["num_envs"], row["num_steps"]) for row in rows}
    if kept := set(before) - swept:
        measured_on += (f"; swept {len(rows)} of {len(rows) + sizes_left} sizes" if sizes_left else "")
        measured_on += f"; {len(kept)} other sizes kept from the table before"
    atomic_write(path, tiles_module(rows, measured_on, before))  # the op imports it: never half written


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` whole, so a sweep killed while writing leaves the last complete file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--sizes", type=parse_sizes, help="comma-separated NxT sizes (default: per device)")
    parser.add_argument("--advantages-only", action="store_true",
                        help="time the kernel writing advantages alone (returns=False), as the trainer calls it")
    parser.add_argument("--write-tiles", type=Path, metavar="PY",
                        help="write each size's fastest tile here as the op's table (kernels/gae_tiles.py)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.write_tiles and device.type != "cuda":
        parser.error("--write-tiles needs CUDA: the table is what was fastest on a GPU")
    torch.manual_seed(0)
    returns = not args.advantages_only
    sizes = args.sizes or (CUDA_SIZES if device.type == "cuda" else CPU_SIZES)
    if device.type == "cuda":
        bandwidth, launch = copy_bandwidth(device), launch_us(device)
        device_name = torch.cuda.get_device_name(device)
        print(f"{device_name}, torch {torch.__version__}, triton {triton.__version__}: copy "
              f"{bandwidth / 1e12:.2f} TB/s, launch {launch:.1f} us, {len(CANDIDATES)} candidate configs, "
              + ("advantages and returns written" if returns else "advantages only"))
        print(f"{'N':>7} {'T':>4} {'floor us':>9} {'best':>14} {'us':>7} {'/floor':>6} {'<2x':>4} {'of':>4}"
              f" {'2nd':>14} {'us':>7}")
    else:
        bandwidth, launch, device_name = None, None, "cpu"
        print(f"cpu: checking {len(CANDIDATES)} candidate configs through the Triton interpreter (no timings)")
    rows = []
    for n, t in sizes:
        row = sweep_size(n, t, device, launch, bandwidth, returns)
        rows.append(row)
        times = row["configs_us"]
        if not times:
            print(f"{n:>7} {t:>4}: {len(row['checked'])} configs match the float64 reference", flush=True)
        else:
            floor, (best, second) = row["floor_us"], (sorted(times, key=times.get) + ["-"])[:2]
            within = sum(us <= 2 * floor for us in times.values())
            print(f"{n:>7} {t:>4} {floor:>9.1f} {best:>14} {times[best]:>7.1f} {times[best] / floor:>6.2f}"
                  f" {within:>4} {len(times):>4} {second:>14} {times.get(second, float('nan')):>7.1f}", flush=True)
            if (op_best := row.get("op_best")) not in (None, best):
                print(f"{'':>13} the op's kernel: {op_best} {times[op_best]:.1f} us, "
                      f"{times[op_best] / times[best]:.2f}x the lab's {best}", flush=True)
        for config, error in row["failed"].items():
            print(f"        FAILED {config}: {error}", flush=True)
        sizes_left = len(sizes) - len(rows)
        if args.json:  # after every size: a sweep stopped by a time limit keeps what it measured
            report = {"device": device_name, "torch": torch.__version__, "triton": triton.__version__,
                      "copy_bytes_per_s": bandwidth, "launch_us": launch, "returns": returns,
                      "sizes_left": sizes_left, "rows": rows}
            atomic_write(args.json, json.dumps(report, indent=2))
        if args.write_tiles and "op_best" in row:
            measured_on = (f"{device_name}, torch {torch.__version__}, triton {triton.__version__}, "
                           f"{datetime.date.today().isoformat()}, bench/gae_lab/gae_sweep.py"
                           + ("" if returns else " --advantages-only"))  # the trainer's call: returns=False
            write_tiles(args.write_tiles, [r for r in rows if "op_best" in r], measured_on, sizes_left)
    if args.write_tiles:
        if missing := [(row["num_envs"], row["num_steps"]) for row in rows if "op_best" not in row]:
            print(f"{args.write_tiles}: no candidate of the op's kernel ran at {missing}, whose tiles are kept from "
                  f"the table before")
            return 1
        print(f"wrote the fastest tile per size to {args.write_tiles}")
    return 1 if any(row["failed"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
