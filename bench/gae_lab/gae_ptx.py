"""What each scan-kernel tile compiles to for a GPU, on any machine: `python bench/gae_lab/gae_ptx.py [--arch 90]
[--tiles "(1,128,1,None,True,True,True)" ...] [--advantages-only] [--json OUT]`. Tiles are the sweep's candidates
(gae_sweep.py): the op's kernel at its tiles, the lab's ascending kernel at the others.

Triton builds PTX for a named target without a device, so the memory instructions a tile issues can be counted
on CPU: global loads and stores by width (`ld.global.v4.b32` moves 16 bytes per thread, `ld.global.b8` one),
warp shuffles, shared-memory traffic (`ldmatrix` too: a layout change through shared memory) and barriers.
The kernel is specialized as the op's launches at the benchmark sizes are (16-byte aligned tensors, sizes
divisible by 16; bool masks, float32 values; returns written unless --advantages-only, as the trainer's
call does not write them), so the counts are those of the kernel the op runs there. Counts
are per program, per time chunk: the loop body appears once. From the cubin (ptxas's output, read with the
cuobjdump Triton ships): registers per thread, and local memory, where registers spill.

Each tile also gets the arguments torch.compile's analysis of the kernel finds written (`writes`): a traced op
functionalizes those. Should the analysis fail, torch assumes every tensor argument written and copies each one
in compiled graphs; only advantages, and returns where written, should appear.

Must run without TRITON_INTERPRET (the interpreter's kernels are not compiled).
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # the lab, then bench/
from ascending_kernel import _gae_ascending_kernel  # noqa: E402
from gae_sweep import CANDIDATES, candidate_kernel, label, op_tile  # noqa: E402

from recurrent_ppo.kernels.gae import _gae_scan_kernel  # noqa: E402

ARGUMENT_TYPES = {
    "rewards_ptr": "*fp32", "values_ptr": "*fp32", "terminated_ptr": "*i1", "truncated_ptr": "*i1",
    "truncated_values_ptr": "*fp32", "last_values_ptr": "*fp32", "advantages_ptr": "*fp32", "returns_ptr": "*fp32",
    "num_envs": "i32", "num_steps": "i32", "stride_env": "i32", "gamma": "fp32", "lam": "fp32",
}
INSTRUCTION = re.compile(r"\b((?:ld|st)\.(?:global|shared)[\w.]*|(?:ld|st)matrix[\w.]*|shfl|bar\.sync)\b")


def compile_tile(tile: tuple, arch: int = 90, store_returns: bool = True):
    """The kernel that runs the candidate `tile` (the op's, or the lab's ascending one) with its constexprs and
    launch options, compiled for sm_{arch}; without returns, as the op launches it with `returns=False`
    (returns_ptr None)."""
    envs, steps, warps, stages, next_from_tile, ascending, where_truncated = tile
    constexprs = {"BLOCK_ENVS": envs, "BLOCK_STEPS": steps, "NEXT_FROM_TILE": next_from_tile}
    if op_tile(tile) is not None:
        kernel = _gae_scan_kernel
    else:
        kernel, constexprs["WHERE_TRUNCATED"] = _gae_ascending_kernel, where_truncated
    constexprs |= {"STORE_RETURNS": store_returns, **({} if store_returns else {"returns_ptr": None})}
    signature = {**ARGUMENT_TYPES, **{name: "constexpr" for name in constexprs}}
    # What Triton's launcher specializes at the benchmark sizes: 16-byte aligned pointers, ints divisible by 16.
    divisible = {(index,): [["tt.divisibility", 16]] for index, name in enumerate(ARGUMENT_TYPES)
                 if signature[name] not in ("fp32", "constexpr")}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=divisible)
    options = {"num_warps": warps, **({} if stages is None else {"num_stages": stages})}
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers per thread, and local and shared memory bytes, as cuobjdump reads them off the cubin."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        report = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(path)], capture_output=True,
                                text=True, check=True).stdout
    usage = dict(re.findall(r"\b(REG|LOCAL|SHARED):(\d+)", report))
    if set(usage) != {"REG", "LOCAL", "SHARED"}:
        raise RuntimeError(f"cuobjdump's resource usage has no REG, LOCAL and SHARED figures:\n{report}")
    return {"registers": int(usage["REG"]), "local_bytes": int(usage["LOCAL"]), "shared_bytes": int(usage["SHARED"])}


def instruction_counts(ptx: str) -> dict[str, int]:
    """How often each global/shared load and store form, shuffle and barrier appears in `ptx`."""
    return dict(sorted(collections.Counter(INSTRUCTION.findall(ptx)).items()))


@contextlib.contextmanager
def target_only_driver(arch: int):
    """Triton's active driver replaced by one that only names the target: what torch's kernel analysis asks of
    it, on a machine without the GPU."""
    target, drivers = GPUTarget("cuda", arch, 32), triton.runtime.driver
    previous = drivers._active  # reset_active() would build the default driver, which fails without a GPU
    drivers.set_active(types.SimpleNamespace(get_current_target=lambda: target))
    try:
        yield
    finally:
        drivers._active = previous


def written_arguments(tile: tuple, arch: int = 90, store_returns: bool = True) -> list[str]:
    """The kernel arguments torch.compile's TTIR analysis finds written when the op launches `tile`."""
    from torch._higher_order_ops import triton_kernel_wrap

    num_envs, num_steps = 64, 128
    matrix = lambda dtype=torch.float32: torch.zeros(num_envs, num_steps, dtype=dtype)  # noqa: E731
    kwargs = {"rewards_ptr": matrix(), "values_ptr": matrix(), "terminated_ptr": matrix(torch.bool),
              "truncated_ptr": matrix(torch.bool), "truncated_values_ptr": matrix(),
              "last_values_ptr": torch.zeros(num_envs), "advantages_ptr": matrix(),
              "returns_ptr": matrix() if store_returns else None, "num_envs": num_envs, "num_steps": num_steps,
              "stride_env": num_steps, "gamma": 0.99, "lam": 0.95, "STORE_RETURNS": store_returns}
    kernel = candidate_kernel(tile)
    with target_only_driver(arch):
        if hasattr(triton_kernel_wrap, "identify_accessed_tensors"):  # torch 2.13
            accesses = triton_kernel_wrap.identify_accessed_tensors(kernel, kwargs, {})
            return sorted(dependency.name for dependency in accesses.read_writes.writes)
        return sorted(triton_kernel_wrap.identify_mutated_tensors(kernel, kwargs, {}))  # torch 2.11


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200")
    parser.add_argument("--tiles", nargs="+", type=ast.literal_eval,
                        help="tiles as (envs, steps, warps, stages, next_from_tile, ascending, where_truncated); "
                             "default: the sweep's")
    parser.add_argument("--advantages-only", action="store_true",
                        help="the kernel as launched with returns=False, as the trainer does: advantages written alone")
    parser.add_argument("--json", type=Path, help="also write each tile's counts and writes here")
    args = parser.parse_args(argv)
    if not isinstance(_gae_scan_kernel, triton.runtime.JITFunction):
        parser.error("TRITON_INTERPRET=1 is set: interpreted kernels are not compiled")
    rows = []
    for tile in args.tiles or CANDIDATES:
        store_returns = not args.advantages_only
        kernel = compile_tile(tuple(tile), args.arch, store_returns)
        counts, usage = instruction_counts(kernel.asm["ptx"]), resource_usage(kernel.asm["cubin"])
        writes = written_arguments(tuple(tile), args.arch, store_returns)
        rows.append({"tile": list(tile), "label": label(*tile), "instructions": counts, **usage, "writes": writes})
        print(f"{label(*tile):>20}  regs {usage['registers']:>3}  local {usage['local_bytes']}  writes "
              f"{','.join(name.removesuffix('_ptr') for name in writes)}  "
              + "  ".join(f"{name} {count}" for name, count in counts.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"arch": args.arch, "triton": triton.__version__, "torch": torch.__version__,
                                         "returns": not args.advantages_only, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
