"""Every scan-kernel config at every GAE size, against the floor: `python bench/gae_sweep.py [--json OUT]`.

What bench/gae_floor.py cannot say: how fast the scan kernel can be at a size, and whether the autotuner finds
that. Per size, every candidate config (the op's SCAN_TILES and wider ones: fewer envs and longer time tiles per
program, one pipeline stage) is checked against the float64 reference, captured alone in a CUDA graph and
timed as gae_floor.py times `triton_graph` (do_bench median, L2 flushed): kernel time plus one graph launch.
Then two autotuners over the op's configs pick one each: Triton's default ranking (what the op does on its
first eager call) and ranking by CUDA-graph replays (`do_bench_cudagraph`, the kernel without the launcher).
The table shows the best candidate, both picks, and each over the floor measured in the same run.

On CPU (TRITON_INTERPRET=1 set before launch) it only checks every candidate through the interpreter at small
sizes: the tiles' masking and chunking are right whatever the timings would be.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import benchlib  # noqa: E402
from gae_floor import GAMMA, LAMBDA, copy_bandwidth, gae_bytes, launch_us, parse_sizes, time_us  # noqa: E402

from recurrent_ppo.kernels.gae import (  # noqa: E402
    SCAN_TILES, gae_reference, launch_scan_kernel, scan_config, scan_kernel)

CUDA_SIZES = [(n, t) for t in (32, 128, 512) for n in (1024, 4096, 16384, 131072)]
CPU_SIZES = [(5, 3), (9, 520)]  # T=520 crosses every time tile's chunk boundary
# Beyond SCAN_TILES: 1-4 envs per program with whole 128-512-step tiles (more programs where envs are few and
# time is long), and single-stage variants of the multi-chunk tiles (does software pipelining help or hurt?).
EXTRA = [(1, 128, 1, None), (2, 128, 2, None), (4, 128, 4, None), (4, 64, 2, None), (8, 64, 2, None),
         (1, 256, 2, None), (2, 256, 4, None), (4, 256, 4, None), (8, 256, 8, None), (1, 512, 4, None),
         (2, 512, 4, None), (4, 512, 8, None), (8, 32, 1, 1), (8, 128, 4, 1), (16, 128, 4, 1)]
CANDIDATES = [(*tile, None) for tile in SCAN_TILES] + EXTRA


def label(envs: int, steps: int, warps: int, stages: int | None) -> str:
    return f"{envs}x{steps}/w{warps}" + ("" if stages is None else f"/s{stages}")


def config_label(config) -> str:
    kwargs = config.kwargs
    stages = None if config.num_stages == scan_config(1, 1, 1).num_stages else config.num_stages
    return label(kwargs["BLOCK_ENVS"], kwargs["BLOCK_STEPS"], config.num_warps, stages)


def graph_ranking(fn: Callable[[], object], quantiles) -> list[float]:
    import triton.testing

    return triton.testing.do_bench_cudagraph(fn, rep=20, quantiles=quantiles)


def runner(kernel, inputs: dict[str, torch.Tensor], out: tuple[torch.Tensor, torch.Tensor]) -> Callable[[], tuple]:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        launch_scan_kernel(kernel, **inputs, gamma=GAMMA, lam=LAMBDA, out=out)
        return out
    return run


def mismatch(out: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor]) -> str | None:
    """How `out` differs from the float64 reference, or None where it matches."""
    for got, want, what in zip(out, expected, ("advantages", "returns")):
        try:
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
        except AssertionError as error:
            return f"{what}: {str(error).splitlines()[0]}"
    return None


def time_candidate(candidate: tuple, inputs: dict[str, torch.Tensor], expected: tuple, device: torch.device) -> float:
    """Check one config (eagerly, then replayed from a CUDA graph on CUDA) and time its replays; None on CPU."""
    out = (torch.full_like(inputs["rewards"], float("nan")), torch.full_like(inputs["rewards"], float("nan")))
    run = runner(scan_kernel([scan_config(*candidate)]), inputs, out)
    if (error := mismatch(run(), expected)) is not None:
        raise AssertionError(error)
    if device.type != "cuda":
        return None
    for tensor in out:
        tensor.fill_(float("nan"))
    replay = benchlib.cuda_graphed(run)
    if (error := mismatch(replay(), expected)) is not None:
        raise AssertionError(f"graph replay: {error}")
    return time_us(replay, device)


def sweep_size(n: int, t: int, device: torch.device, launch: float | None, bandwidth: float | None) -> dict:
    """One size's row. A config that fails (wrong result, out of resources) is recorded under `failed` and the
    sweep goes on: one bad tile must not cost the rest of a lent GPU's minutes."""
    inputs = benchlib.gae_inputs(n, t, device)
    floor = max(launch, gae_bytes(inputs) / bandwidth * 1e6) if bandwidth else None
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    expected = gae_reference(**as_double, gamma=GAMMA, lam=LAMBDA)
    row = {"num_envs": n, "num_steps": t, "floor_us": floor, "checked": [], "configs_us": {}, "failed": {}}
    for candidate in CANDIDATES:
        name = label(*candidate)
        try:
            us = time_candidate(candidate, inputs, expected, device)
        except Exception as error:  # noqa: BLE001 - recorded, reported, and the exit status says so
            row["failed"][name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            continue
        row["checked"].append(name)
        if us is not None:
            row["configs_us"][name] = us
    if device.type == "cuda":
        for ranking, do_bench in (("default", None), ("graph", graph_ranking)):
            tuner = scan_kernel(do_bench=do_bench)
            out = (torch.empty_like(inputs["rewards"]), torch.empty_like(inputs["rewards"]))
            runner(tuner, inputs, out)()
            if (error := mismatch(out, expected)) is not None:
                row["failed"][f"autotuned, {ranking} ranking"] = error
            row[f"{ranking}_pick"] = config_label(tuner.best_config)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--sizes", type=parse_sizes, help="comma-separated NxT sizes (default: per device)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    sizes = args.sizes or (CUDA_SIZES if device.type == "cuda" else CPU_SIZES)
    if device.type == "cuda":
        bandwidth, launch = copy_bandwidth(device), launch_us(device)
        device_name = torch.cuda.get_device_name(device)
        print(f"{device_name}, torch {torch.__version__}: copy {bandwidth / 1e12:.2f} TB/s, launch {launch:.1f} us, "
              f"{len(CANDIDATES)} candidate configs")
        print(f"{'N':>7} {'T':>4} {'floor us':>9} {'best':>14} {'us':>7} {'/floor':>6} {'<2x':>4}"
              f" {'default pick':>14} {'/floor':>6} {'graph pick':>14} {'/floor':>6}")
    else:
        bandwidth, launch, device_name = None, None, "cpu"
        print(f"cpu: checking {len(CANDIDATES)} candidate configs through the Triton interpreter (no timings)")
    rows = []
    for n, t in sizes:
        row = sweep_size(n, t, device, launch, bandwidth)
        rows.append(row)
        times = row["configs_us"]
        if not times:
            print(f"{n:>7} {t:>4}: {len(row['checked'])} configs match the float64 reference", flush=True)
        else:
            floor, best = row["floor_us"], min(times, key=times.get)
            within = sum(us <= 2 * floor for us in times.values())
            picks = "".join(f" {row[k]:>14} {times[row[k]] / floor if row[k] in times else float('nan'):>6.2f}"
                            for k in ("default_pick", "graph_pick"))
            print(f"{n:>7} {t:>4} {floor:>9.1f} {best:>14} {times[best]:>7.1f} {times[best] / floor:>6.2f}"
                  f" {within:>4}{picks}", flush=True)
        for config, error in row["failed"].items():
            print(f"        FAILED {config}: {error}", flush=True)
    if args.json:
        report = {"device": device_name, "torch": torch.__version__, "copy_bytes_per_s": bandwidth,
                  "launch_us": launch, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if any(row["failed"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
