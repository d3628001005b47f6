"""Generalized advantage estimation with truncation bootstrap, over env-major `[num_envs, num_steps]` tensors.

Semantics, per env (docs/design.md, "Semantics"):
    next_value_t = truncated_values_t   if truncated_t
                 = values_{t+1}          elif t < T - 1
                 = last_values           otherwise
    delta_t = r_t + gamma * next_value_t * (1 - terminated_t) - values_t
    A_t     = delta_t + gamma * lam * (1 - (terminated_t or truncated_t)) * A_{t+1},   A_T = 0
    returns = A + values

`gae_reference` is the pure-torch version (the CPU path and the test oracle), `gae_triton` the Triton scan
kernel (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1), and `gae` picks one by device. Outputs are
float32; the recurrence accumulates in float32 whatever the input dtype. Each computes `(advantages, returns)`,
or with `returns=False` advantages alone (`(advantages, None)`): the kernel then writes 4 bytes per step instead
of 8, and a loss that reads advantages and values anyway forms returns as their sum for free (the trainer does).
How the kernel works and how its tiles were chosen: docs/gae.md.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from recurrent_ppo.kernels.gae_tiles import TILES

__all__ = ["Outputs", "Tile", "gae", "gae_reference", "gae_triton", "launch_scan_kernel", "nearest_tile",
           "scan_config", "scan_kernel", "scan_tile", "triton_outputs"]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _compose(decay_a, delta_a, decay_b, delta_b):
    # Each step is the affine map x -> delta + decay * x applied to A_{t+1}. Composing a (later in time,
    # earlier in the scan) with b gives x -> delta_b + decay_b * (delta_a + decay_a * x).
    return decay_a * decay_b, delta_b + decay_b * delta_a


@triton.jit
def _load_steps(rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, offs, mask):
    reward = tl.load(rewards_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    value = tl.load(values_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    terminated = tl.load(terminated_ptr + offs, mask=mask, other=0).to(tl.float32)
    truncated = tl.load(truncated_ptr + offs, mask=mask, other=0).to(tl.float32)
    return reward, value, terminated, truncated


@triton.jit
def _load_truncated_values(truncated_values_ptr, offs, mask, truncated):
    # Only where a step is truncated: rollouts truncate rarely, so most of this tensor's sectors are never fetched;
    # but the load waits for the mask's, a second trip to memory for every warp with a truncated step.
    return tl.load(truncated_values_ptr + offs, mask=mask & (truncated != 0.0), other=0.0).to(tl.float32)


@triton.jit
def _step_maps(reward, value, next_value, terminated, truncated, truncated_value, mask, gamma, lam):
    """Each step's affine map A_t = delta_t + decay_t * A_{t+1}; steps outside the rollout (mask False) are
    identity maps, so a carry passes through them."""
    bootstrap = tl.where(truncated != 0.0, truncated_value, next_value)
    delta = reward + gamma * bootstrap * (1.0 - terminated) - value
    decay = gamma * lam * (1.0 - terminated) * (1.0 - truncated)
    # fp32 whatever the scalars' type: inductor passes Python floats to user kernels as fp64.
    return tl.where(mask, decay, 1.0).to(tl.float32), tl.where(mask, delta, 0.0).to(tl.float32)


@triton.jit
def _next_values_loaded(values_ptr, offs, t, mask, num_steps, last_value):
    """V(s_{t+1}) loaded again one column over, mostly from the cache lines the value tile brought in; the
    rollout's last step takes last_value."""
    has_next = t + 1 < num_steps
    next_value = tl.load(values_ptr + offs + 1, mask=mask & has_next, other=0.0).to(tl.float32)
    return tl.where(has_next, next_value, last_value[:, None])


@triton.jit
def _descending_chunk(
    rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, advantages_ptr, returns_ptr,
    row, env_mask, last_value, num_steps, start, carry, later_value, gamma, lam,
    BLOCK_ENVS: tl.constexpr, BLOCK_STEPS: tl.constexpr, NEXT_FROM_TILE: tl.constexpr, STORE_RETURNS: tl.constexpr,
):
    # Time descends along the tile, so the recurrence is one forward associative scan over it (reverse scans
    # have had wrong-result bugs in Triton). The cost: descending addresses, which Triton loads and stores a
    # scalar at a time (the lab's ascending variant, bench/gae_lab/ascending_kernel.py, vectorizes them).
    lane = tl.arange(0, BLOCK_STEPS)[None, :]  # [1, S]
    t = num_steps - 1 - start - lane  # [1, S], decreasing along the tile
    mask = env_mask[:, None] & (t >= 0)  # [E, S]
    offs = row + t
    reward, value, terminated, truncated = _load_steps(rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, offs,
                                                       mask)
    truncated_value = _load_truncated_values(truncated_values_ptr, offs, mask, truncated)
    if NEXT_FROM_TILE:  # V(s_{t+1}): the value tile's previous lane; lane 0 takes the later chunk's last lane
        shifted = tl.gather(value, tl.maximum(lane - 1, 0) + tl.zeros([BLOCK_ENVS, BLOCK_STEPS], tl.int32), axis=1)
        next_value = tl.where(lane == 0, later_value[:, None], shifted)
        later_value = tl.sum(tl.where(lane == BLOCK_STEPS - 1, value, 0.0), axis=1)
    else:
        next_value = _next_values_loaded(values_ptr, offs, t, mask, num_steps, last_value)
    decay, delta = _step_maps(reward, value, next_value, terminated, truncated, truncated_value, mask, gamma, lam)
    decay, delta = tl.associative_scan((decay, delta), axis=1, combine_fn=_compose)
    advantage = delta + decay * carry[:, None]  # [E, S]
    tl.store(advantages_ptr + offs, advantage, mask=mask)
    if STORE_RETURNS:
        tl.store(returns_ptr + offs, advantage + value, mask=mask)
    carry = tl.sum(tl.where(lane == BLOCK_STEPS - 1, advantage, 0.0), axis=1)
    return carry, later_value


@triton.jit
def _gae_scan_kernel(
    rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, last_values_ptr,
    advantages_ptr, returns_ptr,
    num_envs, num_steps, stride_env,
    gamma, lam,
    BLOCK_ENVS: tl.constexpr, BLOCK_STEPS: tl.constexpr, NEXT_FROM_TILE: tl.constexpr, STORE_RETURNS: tl.constexpr,
):
    # A program owns BLOCK_ENVS envs and walks time backwards in chunks of BLOCK_STEPS. Each chunk loads whole
    # [envs, steps] tiles (contiguous along time in the env-major layout), builds every step's affine map at
    # once, and solves the chunk's recurrence with an associative scan; only the carry A between chunks is
    # sequential. NEXT_FROM_TILE: where V(s_{t+1}) comes from (_descending_chunk); STORE_RETURNS, whether
    # returns are written too (returns_ptr is None without them).
    envs = tl.program_id(0) * BLOCK_ENVS + tl.arange(0, BLOCK_ENVS)  # [E]
    env_mask = envs < num_envs
    row = envs.to(tl.int64)[:, None] * stride_env  # [E, 1]
    last_value = tl.load(last_values_ptr + envs, mask=env_mask, other=0.0).to(tl.float32)  # [E]
    carry = tl.zeros([BLOCK_ENVS], dtype=tl.float32)  # A at the step after the chunk; A_T = 0
    later_value = last_value  # V at the step after the chunk
    for start in range(0, num_steps, BLOCK_STEPS):
        carry, later_value = _descending_chunk(
            rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, advantages_ptr,
            returns_ptr, row, env_mask, last_value, num_steps, start, carry, later_value, gamma, lam,
            BLOCK_ENVS, BLOCK_STEPS, NEXT_FROM_TILE, STORE_RETURNS)


# (BLOCK_ENVS, BLOCK_STEPS, num_warps, num_stages or None for Triton's, NEXT_FROM_TILE)
Tile = tuple[int, int, int, int | None, bool]
# Under the interpreter: small tiles, so CPU tests cross several time chunks and env blocks.
_INTERPRETER_TILE: Tile = (32, 16, 1, None, True)


def scan_config(envs: int, steps: int, warps: int, stages: int | None = None,
                next_from_tile: bool = False) -> triton.Config:
    """A scan-kernel config: tile BLOCK_ENVS x BLOCK_STEPS, `warps` warps, Triton's default stages unless given;
    V(s_{t+1}) shifted out of the value tile, or loaded again (default)."""
    extra = {} if stages is None else {"num_stages": stages}
    return triton.Config({"BLOCK_ENVS": envs, "BLOCK_STEPS": steps, "NEXT_FROM_TILE": next_from_tile},
                         num_warps=warps, **extra)


def scan_kernel(configs: list[triton.Config]):
    """The scan kernel under an autotuner over `configs`; one config is launched as given, untimed. The op
    launches one config per tile (torch.compile traces an autotuner with its launch options, which a bare
    kernel's num_warps keyword is not guaranteed to be); bench/gae_lab/gae_sweep.py builds one per candidate."""
    return triton.autotune(configs=configs, key=["num_envs", "num_steps"])(_gae_scan_kernel)


def nearest_tile(tiles: dict[tuple[int, int], Tile], num_envs: int, num_steps: int) -> Tile:
    """The tile of the size in `tiles` nearest to (num_envs, num_steps) in log2 of both, its time tile cut to
    num_steps rounded up to a power of two (at least 16), so short rollouts do not scan masked lanes."""
    def distance(size: tuple[int, int]) -> float:
        return abs(math.log2(max(num_envs, 1) / size[0])) + abs(math.log2(max(num_steps, 1) / size[1]))

    envs, steps, *launch = tiles[min(tiles, key=distance)]
    return envs, min(steps, max(16, triton.next_power_of_2(num_steps))), *launch


@functools.cache  # ~7 us of Python per eager call otherwise
def scan_tile(num_envs: int, num_steps: int) -> Tile:
    """The tile the op launches at a size: from the table bench/gae_lab/gae_sweep.py measured (gae_tiles.py);
    under the interpreter, a small fixed one."""
    return _INTERPRETER_TILE if _interpreting() else nearest_tile(TILES, num_envs, num_steps)


@functools.cache
def _tile_kernel(tile: Tile):
    return scan_kernel([scan_config(*tile)])


def _check_inputs(rewards, values, terminated, truncated, truncated_values, last_values) -> None:
    shape = rewards.shape
    if rewards.dim() != 2:
        raise ValueError(f"gae: rewards must be [num_envs, num_steps], got shape {tuple(shape)}")
    named = {"values": values, "terminated": terminated, "truncated": truncated, "truncated_values": truncated_values}
    for name, tensor in named.items():
        if tensor.shape != shape:
            raise ValueError(f"gae: {name} has shape {tuple(tensor.shape)}, expected {tuple(shape)} like rewards")
    if last_values.shape != shape[:1]:
        raise ValueError(f"gae: last_values has shape {tuple(last_values.shape)}, expected ({shape[0]},)")
    for name, tensor in {"rewards": rewards, **named, "last_values": last_values}.items():
        if tensor.device != rewards.device:
            raise ValueError(f"gae: {name} is on {tensor.device}, rewards on {rewards.device}")


Outputs = tuple[torch.Tensor, torch.Tensor | None]  # (advantages, returns), returns None when not computed


def _outputs(rewards: torch.Tensor, out: Outputs | None, returns: bool) -> Outputs:
    if out is None:
        empty = lambda: torch.empty(rewards.shape, dtype=torch.float32, device=rewards.device)  # noqa: E731
        return empty(), empty() if returns else None
    if len(out) != 2 or out[0] is None or (out[1] is not None) != returns:
        raise ValueError(f"gae: out must be (advantages, {'returns' if returns else 'None'}) with returns={returns}, "
                         f"got {tuple(type(tensor).__name__ for tensor in out)}")
    for name, tensor in zip(("advantages", "returns"), out):
        if tensor is None:
            continue
        if tensor.shape != rewards.shape or tensor.dtype != torch.float32 or tensor.device != rewards.device:
            raise ValueError(f"gae: out {name} must be float32 {tuple(rewards.shape)} on {rewards.device}, got "
                             f"{tensor.dtype} {tuple(tensor.shape)} on {tensor.device}")
        if not tensor.is_contiguous():
            raise ValueError(f"gae: out {name} must be contiguous")
    return out


def triton_outputs(inputs: dict[str, torch.Tensor], out: Outputs | None, returns: bool) -> Outputs:
    """What a Triton GAE launch checks first (shapes, devices, contiguity; CPU tensors only under the
    interpreter), then the tensors it writes: `out`, checked, or new ones. `inputs` are gae_triton's by name."""
    _check_inputs(**inputs)
    if inputs["rewards"].device.type == "cpu" and not _interpreting():
        raise RuntimeError("gae_triton got CPU tensors: use gae_reference, or set TRITON_INTERPRET=1 before import")
    for name, tensor in inputs.items():
        if not tensor.is_contiguous():
            raise ValueError(f"gae_triton: {name} must be contiguous (env-major [num_envs, num_steps])")
    return _outputs(inputs["rewards"], out, returns)


def gae_reference(
    *,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    truncated_values: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
    out: Outputs | None = None,
    returns: bool = True,
) -> Outputs:
    """Pure-torch GAE: vectorized over envs, a loop over time. Returns `(advantages, returns)` in float32
    (float64 for float64 rewards, so it can serve as a float64 oracle), returns None with `returns=False`;
    copied into `out` when given."""
    _check_inputs(rewards, values, terminated, truncated, truncated_values, last_values)
    num_steps = rewards.shape[1]
    acc = torch.float32 if rewards.dtype != torch.float64 else torch.float64
    rewards, values, truncated_values = rewards.to(acc), values.to(acc), truncated_values.to(acc)
    terminated, truncated = terminated.to(acc), truncated.to(acc)
    # Bootstrap value of each step, built for all steps at once: V(s_{t+1}), the last column from last_values.
    next_values = torch.cat([values[:, 1:], last_values.to(acc)[:, None]], dim=1)
    next_values = torch.where(truncated.bool(), truncated_values, next_values)
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values  # [N, T]
    decay = gamma * lam * (1.0 - terminated) * (1.0 - truncated)  # [N, T]
    advantages = torch.empty_like(deltas)
    next_advantage = torch.zeros_like(deltas[:, 0])
    for t in range(num_steps - 1, -1, -1):
        next_advantage = deltas[:, t] + decay[:, t] * next_advantage
        advantages[:, t] = next_advantage
    if out is not None:
        _outputs(rewards, out, returns)
        out[0].copy_(advantages)
        if returns:
            torch.add(advantages, values, out=out[1])
        return out
    return advantages, advantages + values if returns else None


def launch_scan_kernel(kernel, *, rewards, values, terminated, truncated, truncated_values, last_values, gamma, lam,
                       out: Outputs) -> None:
    """Run `kernel` (from `scan_kernel`) once, writing `out` (returns too unless `out[1]` is None): for
    benchmarks that compare configs. It skips the checks `gae_triton` makes, so give it what `gae_triton`
    accepts."""
    num_envs, num_steps = rewards.shape
    grid = lambda meta: (triton.cdiv(num_envs, meta["BLOCK_ENVS"]),)  # noqa: E731
    kernel[grid](rewards, values, terminated, truncated, truncated_values, last_values, *out, num_envs, num_steps,
                 num_steps, float(gamma), float(lam), STORE_RETURNS=out[1] is not None)


def _launch(rewards, values, terminated, truncated, truncated_values, last_values, gamma, lam, advantages, returns,
            wrap):
    kernel = _tile_kernel(scan_tile(*rewards.shape))
    launch_scan_kernel(wrap(kernel), rewards=rewards, values=values, terminated=terminated, truncated=truncated,
                       truncated_values=truncated_values, last_values=last_values, gamma=gamma, lam=lam,
                       out=(advantages, returns))


# On CUDA a triton_op, which torch.compile traces into (inductor sees the kernel; CUDA graphs capture it). Under
# TRITON_INTERPRET=1 the kernel is a Python function that cannot run on the fake tensors compile traces with,
# so there it is an opaque custom op with the fake implementation below.
_register_op = torch.library.custom_op if _interpreting() else torch.library.triton_op
# Under the interpreter the kernels are launched directly: torch < 2.13's wrap_triton rejects interpreted kernels
# (InterpretedFunction, or an Autotuner around one), and the opaque custom_op needs no traceable wrapper.
_wrap_triton = (lambda kernel: kernel) if _interpreting() else torch.library.wrap_triton


@_register_op("recurrent_ppo::gae_triton", mutates_args={"advantages", "returns"})
def _gae_triton_op(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    truncated_values: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
    advantages: torch.Tensor,
    returns: torch.Tensor | None,
) -> None:
    _launch(rewards, values, terminated, truncated, truncated_values, last_values, gamma, lam, advantages, returns,
            _wrap_triton)


if _interpreting():

    @_gae_triton_op.register_fake
    def _(rewards, values, terminated, truncated, truncated_values, last_values, gamma, lam, advantages, returns):
        return None


def _traced(tensors) -> bool:
    """Whether a tracer must see this call as the op: Dynamo compiling, a dispatch mode active (make_fx, fake or
    functional tensors), or tensor subclasses among the arguments."""
    return (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
            or any(type(tensor) is not torch.Tensor for tensor in tensors))


def gae_triton(
    *,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    truncated_values: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
    out: Outputs | None = None,
    returns: bool = True,
) -> Outputs:
    """Triton GAE: the chunked associative-scan kernel, its tile measured per size (`scan_tile`). Inputs must be
    contiguous; masks may be bool or float; rewards/values any float dtype.

    Runs on CUDA tensors, and on CPU tensors when TRITON_INTERPRET=1 was set before this module was imported.
    Returns float32 `(advantages, returns)`, written into `out` when given (e.g. the rollout buffer's tensors);
    with `returns=False`, `(advantages, None)` and only advantages written (`out` then `(advantages, None)`).
    """
    inputs = {"rewards": rewards, "values": values, "terminated": terminated, "truncated": truncated,
              "truncated_values": truncated_values, "last_values": last_values}
    advantages, returns_out = triton_outputs(inputs, out, returns)
    args = (*inputs.values(), float(gamma), float(lam), advantages, returns_out)
    if _traced([*inputs.values(), advantages] + ([] if returns_out is None else [returns_out])):
        _gae_triton_op(*args)
    else:  # eager: straight to Triton's launcher, skipping the custom op's dispatch (more than the kernel's time)
        _launch(*args, wrap=lambda kernel: kernel)
    return advantages, returns_out


def gae(
    *,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    truncated_values: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
    out: Outputs | None = None,
    returns: bool = True,
) -> Outputs:
    """GAE by device: the Triton kernel on CUDA, the pure-torch reference elsewhere."""
    impl = gae_triton if rewards.is_cuda else gae_reference
    return impl(rewards=rewards, values=values, terminated=terminated, truncated=truncated,
                truncated_values=truncated_values, last_values=last_values, gamma=gamma, lam=lam, out=out,
                returns=returns)
