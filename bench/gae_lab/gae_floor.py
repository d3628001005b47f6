"""GAE against its physical floor, every provider in one run: `python bench/gae_lab/gae_floor.py [--json OUT]`.

The floor of a size is max(launch, bytes / copy bandwidth), with the launch time (a one-element kernel) and the
device-to-device copy bandwidth (bytes read + written) measured in the same run. Bytes are what GAE must move:
rewards, values, both masks and last_values read once, truncated_values where a step is truncated (by 32-byte
sector, `gae_bytes`), and advantages and returns written; `floor_tv_whole_us` counts truncated_values whole, as
runs 1-5 did, and the verdict also sets the call with returns against it for comparison with them. Each
provider is checked against the float64-accumulated reference before it is timed. `triton` is the op as called
eagerly (its Python and Triton's launcher included); `triton_graph` is the same op replayed from a CUDA graph, as a
CUDA-graphed step runs it: the kernel's own time plus one launch. `graph/gfloor` sets it against the floor whose
launch is also replayed from a graph (`floor_graph_launch_us`): the verdict's floor uses the plain launch. `copy`
is a copy of as many bytes (`same_bytes_copy`). `triton_graph_adv` is `triton_graph` with `returns=False`, the op
as the trainer calls it: advantages alone, 4 bytes per step fewer written, so its floor (`floor_adv_us`) and copy
count those bytes; a third table sets it against them. On CUDA, times are triton.testing.do_bench medians (L2
flushed by a 256 MB memset before each call); the launch, `triton_graph` and the copy are also timed after a 256 MB
read instead, which leaves L2 without dirty lines to write back (`*_read_flush_us`), and `triton_graph` with no
flush at all (`triton_graph_warm_us`): a second table sets them side by side (`time_us` says why). On CPU, medians
of perf_counter and the Triton providers are skipped (the interpreter's timings say nothing), which keeps a CPU run
a quick smoke test.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # the lab, then bench/
import benchlib  # noqa: E402
from cleanrl_baseline import cleanrl_gae  # noqa: E402
from loop_kernel import gae_triton_loop  # noqa: E402

from recurrent_ppo.kernels.gae import gae_reference, gae_triton, scan_tile  # noqa: E402

GAMMA, LAMBDA = 0.99, 0.95
CUDA_SIZES = [(n, t) for t in (32, 128, 512) for n in (1024, 4096, 16384, 131072)]
CPU_SIZES = [(32, 128), (1024, 32)]


FLUSH_BYTES = 256 << 20  # as do_bench's: several times an H100's or H200's 50-60 MB L2
FLUSHES = ("memset", "read", "none")


def time_us(fn: Callable[[], object], device: torch.device, rep_ms: int = 200, flush: str = "memset") -> float:
    """Median microseconds of one call. On CUDA, what runs before each call: `memset` is do_bench's L2 flush, a
    256 MB write, which leaves L2 full of dirty lines that the timed call must write back as it evicts them (up
    to its own bytes again, where they fit in L2); `read` reads 256 MB instead, so L2 holds clean lines and the
    call pays for its own traffic only; `none` leaves L2 warm with the previous call's data (a reference: a
    flush whose times come out like it did not empty L2)."""
    if flush not in FLUSHES:
        raise ValueError(f"flush={flush!r} must be one of {FLUSHES}")
    if device.type == "cuda":
        import triton.testing

        if flush == "memset":
            return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median") * 1e3
        # With nothing ahead of it, a call would wait on the host's launch; a spin of ~50 us without memory
        # traffic keeps the GPU busy while the host enqueues the call and its events.
        return _median_us_cuda(fn, rep_ms, _read_flush() if flush == "read" else lambda: torch.cuda._sleep(100_000))
    fn()
    samples = []
    for _ in range(20):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


@functools.cache
def _read_flush() -> Callable[[], None]:
    """A kernel that reads FLUSH_BYTES and writes 8 bytes."""
    lines = torch.ones(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    total = torch.empty((), dtype=torch.int64, device="cuda")
    return lambda: torch.sum(lines, out=total)


def _median_us_cuda(fn: Callable[[], object], rep_ms: int, before: Callable[[], object]) -> float:
    """do_bench's loop (estimate from 5 calls, warm up, then one event pair per call) with `before` run ahead of
    each timed call in place of its memset."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        before()
        fn()
    end.record()
    torch.cuda.synchronize()
    repeats = max(1, int(rep_ms / (start.elapsed_time(end) / 5)))
    for _ in range(max(1, repeats // 8)):  # warm up
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        before()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events) * 1e3


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read and written."""
    numel = (1 << 28) if device.type == "cuda" else (1 << 24)
    src = torch.empty(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / (time_us(lambda: dst.copy_(src), device) * 1e-6)


def launch_us(device: torch.device, flush: str = "memset", graphed: bool = False) -> float:
    """Time of the smallest kernel: what any single launch costs; `graphed`, replayed from a CUDA graph, as
    `triton_graph` runs (a graph replay adds its own device-side work to the launch)."""
    x = torch.zeros(1, device=device)
    fn = benchlib.cuda_graphed(lambda: x.add_(1)) if graphed else lambda: x.add_(1)
    return time_us(fn, device, flush=flush)


SECTOR_BYTES = 32  # the smallest unit a GPU moves between DRAM and L2


def gae_bytes(inputs: dict[str, torch.Tensor], returns: bool = True, truncated_values_whole: bool = False) -> int:
    """Bytes GAE must move: every input read once and advantages (and returns) written, except truncated_values,
    which it needs only where a step is truncated: counted by the 32-byte sectors that hold a truncated step,
    the least any load of those steps fetches, placed by the tensor's address (a view may start mid-sector).
    `truncated_values_whole` counts it whole, as the floor of runs 1-5 did (a floor up to 4 bytes per step
    higher than what the op must move)."""
    values = inputs["truncated_values"]
    read = sum(t.numel() * t.element_size() for name, t in inputs.items() if name != "truncated_values")
    if truncated_values_whole:
        read += values.numel() * values.element_size()
    else:
        per_sector = SECTOR_BYTES // values.element_size()
        truncated = inputs["truncated"].reshape(-1).bool()  # env-major and contiguous, as the buffer stores it
        lead = values.data_ptr() % SECTOR_BYTES // values.element_size()  # steps sharing the first sector
        truncated = torch.nn.functional.pad(truncated, (lead, -(lead + truncated.numel()) % per_sector))
        read += int(truncated.view(-1, per_sector).any(dim=1).sum()) * SECTOR_BYTES
    written = (2 if returns else 1) * inputs["rewards"].numel() * 4  # float32 advantages (and returns)
    return read + written


def same_bytes_copy(inputs: dict[str, torch.Tensor], device: torch.device, returns: bool = True) -> Callable[[], None]:
    """A device-to-device copy moving as many bytes as GAE (half read, half written), timed the same way: what
    the memory system delivers at this size, launch and ramp-up included, where the floor assumes the full
    bandwidth from the first byte."""
    src = torch.empty(gae_bytes(inputs, returns) // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def providers(inputs: dict[str, torch.Tensor], device: torch.device, compile_loop: bool) -> dict[str, Callable]:
    fns = {"cleanrl_loop": lambda: cleanrl_gae(**inputs, gamma=GAMMA, gae_lambda=LAMBDA)}
    if compile_loop:
        compiled = torch.compile(gae_reference, fullgraph=True, dynamic=False)
        fns["compiled_loop"] = lambda: compiled(**inputs, gamma=GAMMA, lam=LAMBDA)
    if device.type == "cuda":
        fns["triton_loop"] = lambda: gae_triton_loop(**inputs, gamma=GAMMA, lam=LAMBDA)
        fns["triton"] = lambda: gae_triton(**inputs, gamma=GAMMA, lam=LAMBDA)
        # As a CUDA-graphed training step runs it: without the op's Python and Triton's launcher per call.
        fns["triton_graph"] = benchlib.cuda_graphed(lambda: gae_triton(**inputs, gamma=GAMMA, lam=LAMBDA))
        fns["triton_graph_adv"] = benchlib.cuda_graphed(
            lambda: gae_triton(**inputs, gamma=GAMMA, lam=LAMBDA, returns=False))
    return fns


def check(name: str, fn: Callable, inputs: dict[str, torch.Tensor]) -> None:
    advantages, _ = fn()  # returns are A + V, computed from the same advantages (tests/test_gae.py checks them)
    expected, _ = gae_reference(**{k: v.double() if v.is_floating_point() else v for k, v in inputs.items()},
                                gamma=GAMMA, lam=LAMBDA)
    torch.testing.assert_close(advantages.double(), expected, rtol=1e-4, atol=1e-4,
                               msg=lambda m: f"{name} advantages differ from the float64 reference: {m}")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"4096x128,1024x32" -> [(4096, 128), (1024, 32)]."""
    try:
        return [(int(n), int(t)) for n, t in (size.split("x") for size in text.split(",") if size)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must look like 4096x128,1024x32; got {text!r}") from None


def print_flush_table(rows: list[dict]) -> None:
    """The graphed op and the same-bytes copy against the floor, by what ran before each call."""
    print("Before each call: memset = do_bench's L2 flush (dirty lines left), read = a 256 MB read (clean lines),"
          " warm = nothing")
    print(f"{'N':>7} {'T':>4} {'memset: floor':>14} {'graph':>7} {'copy':>7} {'graph/floor':>12} {'copy/floor':>11}"
          f" {'read: floor':>12} {'graph':>7} {'copy':>7} {'graph/floor':>12} {'copy/floor':>11} {'warm: graph':>12}")
    for row in rows:
        memset = (row["floor_us"], row["triton_graph_us"], row["same_bytes_copy_us"])
        read = (row["floor_read_flush_us"], row["triton_graph_read_flush_us"], row["same_bytes_copy_read_flush_us"])
        line = f"{row['num_envs']:>7} {row['num_steps']:>4}"
        for floor, graph, copy in (memset, read):
            line += f" {floor:>14.1f} {graph:>7.1f} {copy:>7.1f} {graph / floor:>12.2f} {copy / floor:>11.2f}"
        print(line + f" {row['triton_graph_warm_us']:>12.1f}")


def print_advantages_only_table(rows: list[dict]) -> None:
    """The op as the trainer calls it (returns=False) against its own floor and a copy of its own bytes."""
    print("Advantages only (returns=False, the trainer's call): 4 bytes per step fewer written")
    print(f"{'N':>7} {'T':>4} {'floor':>7} {'adv':>7} {'copy':>7} {'adv/floor':>10} {'copy/floor':>11}"
          f" {'adv/graph':>10} {'read: floor':>12} {'adv':>7} {'adv/floor':>10}")
    for row in rows:
        floor, adv, copy = row["floor_adv_us"], row["triton_graph_adv_us"], row["same_bytes_copy_adv_us"]
        read_floor, read_adv = row["floor_adv_read_flush_us"], row["triton_graph_adv_read_flush_us"]
        print(f"{row['num_envs']:>7} {row['num_steps']:>4} {floor:>7.1f} {adv:>7.1f} {copy:>7.1f} {adv / floor:>10.2f}"
              f" {copy / floor:>11.2f} {adv / row['triton_graph_us']:>10.2f} {read_floor:>12.1f} {read_adv:>7.1f}"
              f" {read_adv / read_floor:>10.2f}")


# The floor verdict: every size within 2x of its floor, and the CleanRL loop at least 1000x slower at 4096x128.
ACCEPTANCE_RATIO, ACCEPTANCE_SPEEDUP, SPEEDUP_SIZE = 2.0, 1000.0, (4096, 128)


# The verdict's calls: each against its own floor, and the call with returns against runs 1-5's floor.
VERDICTS = {"triton_graph_adv": ("triton_graph_adv", "floor_adv_us"), "triton_graph": ("triton_graph", "floor_us"),
            "triton_graph vs floor_tv_whole": ("triton_graph", "floor_tv_whole_us")}


def acceptance(rows: list[dict]) -> dict[str, dict]:
    """The floor verdict in this run, per VERDICTS entry: the sizes over 2x the floor, and the CleanRL loop's
    time over the call's at 4096x128 (None if absent)."""
    verdicts = {}
    for name, (call, floor_key) in VERDICTS.items():
        misses = [f"{row['num_envs']}x{row['num_steps']}: {row[f'{call}_us'] / row[floor_key]:.2f}" for row in rows
                  if row[f"{call}_us"] > ACCEPTANCE_RATIO * row[floor_key]]
        speedup = next((row["cleanrl_loop_us"] / row[f"{call}_us"] for row in rows
                        if (row["num_envs"], row["num_steps"]) == SPEEDUP_SIZE), None)
        verdicts[name] = {"sizes": len(rows), "over_2x_floor": misses, "cleanrl_speedup_4096x128": speedup}
    return verdicts


def print_acceptance(verdicts: dict[str, dict]) -> None:
    for name, verdict in verdicts.items():
        call, floor_key = VERDICTS[name]
        speedup = verdict["cleanrl_speedup_4096x128"]
        misses = verdict["over_2x_floor"]
        print(f"floor verdict, {call}: within 2x of {floor_key} at {verdict['sizes'] - len(misses)} of "
              f"{verdict['sizes']} sizes"
              + (f" (over: {', '.join(misses)})" if misses else "")
              + ("" if speedup is None else f"; CleanRL loop / {call} at 4096x128: {speedup:,.0f}x"
                 + (" (>= 1000x)" if speedup >= ACCEPTANCE_SPEEDUP else " (UNDER 1000x)")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--sizes", type=parse_sizes, help="comma-separated NxT sizes (default: per device)")
    parser.add_argument("--compile-sizes", type=parse_sizes, default="32x128",
                        help="NxT sizes that the compiled torch loop also runs at: each is one inductor compile of a "
                             "loop unrolled T times (tens of seconds at T=128)")
    args = parser.parse_args(argv)
    compile_sizes = set(args.compile_sizes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    bandwidth, launch = copy_bandwidth(device), launch_us(device)
    cuda = device.type == "cuda"
    launch_read = launch_us(device, flush="read") if cuda else None
    launch_graph = launch_us(device, graphed=True) if cuda else None
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"{name}, torch {torch.__version__}: copy {bandwidth / 1e12:.2f} TB/s, launch {launch:.1f} us"
          + (f" ({launch_read:.1f} us after a read flush, {launch_graph:.1f} us replayed from a CUDA graph)"
             if cuda else ""))
    rows = []
    sizes = args.sizes or (CUDA_SIZES if device.type == "cuda" else CPU_SIZES)
    names = ["cleanrl_loop"] + (["compiled_loop"] if compile_sizes & set(sizes) else [])
    names += ["triton_loop", "triton", "triton_graph", "triton_graph_adv"] if device.type == "cuda" else []
    width = {p: max(16, len(p) + 3) for p in names}
    header = f"{'N':>7} {'T':>4} {'floor us':>9}" + "".join(f" {p + ' us':>{width[p]}}" for p in names)
    if "triton" in names:
        header += (f" {'triton/floor':>13} {'graph/floor':>12} {'graph/gfloor':>13} {'cleanrl/graph':>14}"
                   f" {'copy us':>8} {'triton/copy':>12}")
    print(header)
    for n, t in sizes:
        inputs = benchlib.gae_inputs(n, t, device)
        bytes_us = gae_bytes(inputs) / bandwidth * 1e6
        floor = max(launch, bytes_us)
        row = {"num_envs": n, "num_steps": t, "floor_us": floor, "scan_tile": scan_tile(n, t),
               "floor_tv_whole_us": max(launch, gae_bytes(inputs, truncated_values_whole=True) / bandwidth * 1e6)}
        fns = providers(inputs, device, (n, t) in compile_sizes)
        for provider, fn in fns.items():
            check(provider, fn, inputs)
            row[f"{provider}_us"] = time_us(fn, device)
        if cuda:
            copy = same_bytes_copy(inputs, device)
            row["same_bytes_copy_us"] = time_us(copy, device)
            # After a read flush: the floor with that flush's launch, the graphed op and the copy; and warm.
            row["floor_read_flush_us"] = max(launch_read, bytes_us)
            row["floor_graph_launch_us"] = max(launch_graph, bytes_us)  # the floor of an op run as triton_graph
            row["triton_graph_read_flush_us"] = time_us(fns["triton_graph"], device, flush="read")
            row["same_bytes_copy_read_flush_us"] = time_us(copy, device, flush="read")
            row["triton_graph_warm_us"] = time_us(fns["triton_graph"], device, flush="none")
            # Advantages alone: their own floor (fewer bytes) and a copy of as many bytes.
            adv_bytes_us = gae_bytes(inputs, returns=False) / bandwidth * 1e6
            row["floor_adv_us"] = max(launch, adv_bytes_us)
            row["floor_adv_read_flush_us"] = max(launch_read, adv_bytes_us)
            row["same_bytes_copy_adv_us"] = time_us(same_bytes_copy(inputs, device, returns=False), device)
            row["triton_graph_adv_read_flush_us"] = time_us(fns["triton_graph_adv"], device, flush="read")
        rows.append(row)
        line = f"{n:>7} {t:>4} {floor:>9.1f}" + "".join(
            f" {row[p + '_us']:>{width[p]}.1f}" if p + "_us" in row else f" {'-':>{width[p]}}" for p in names)
        if "triton" in names:
            graph_us = row["triton_graph_us"]
            copy_us = row["same_bytes_copy_us"]
            line += (f" {row['triton_us'] / floor:>13.2f} {graph_us / floor:>12.2f}"
                     f" {graph_us / row['floor_graph_launch_us']:>13.2f} {row['cleanrl_loop_us'] / graph_us:>14.0f}"
                     f" {copy_us:>8.1f} {row['triton_us'] / copy_us:>12.2f}")
        print(line, flush=True)
    if cuda:
        print_flush_table(rows)
        print_advantages_only_table(rows)
        print_acceptance(acceptance(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "copy_bytes_per_s": bandwidth,
                                         "launch_us": launch, "launch_read_flush_us": launch_read,
                                         "launch_graph_us": launch_graph, "rows": rows,
                                         "acceptance": acceptance(rows) if cuda else None},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
