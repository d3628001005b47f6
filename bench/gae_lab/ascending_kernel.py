"""The GAE scan with time ascending along its tile: the lab's variant of the op's scan kernel
(recurrent_ppo.kernels.gae), which orders time descending. The sweep (gae_sweep.py) times it beside the op's tiles;
no GPU run has timed it yet (docs/gae.md), and the op's table takes only tiles the op's kernel runs.

The op's descending tile is one forward scan over the tile, but its addresses descend, and Triton then loads and
stores a scalar per element. Here time ascends along the tile, as in memory, so each thread loads and stores
16-byte vectors; the recurrence runs backwards over them without a reverse scan (see `_ascending_chunk`).
`WHERE_TRUNCATED` chooses how truncated_values is read: only where a step is truncated (the op's load), or whole,
with the other loads (4 more bytes per step, no second trip to memory behind the mask's load).

The rest is the op's own: its loads, step maps, their composition and its V(s_{t+1}) load, so the variant differs
from the op's kernel in the chunk alone, and `launch_scan_kernel` launches it as it does the op's.
"""

from __future__ import annotations

import triton
import triton.language as tl

from recurrent_ppo.kernels.gae import (_compose, _load_steps, _load_truncated_values, _next_values_loaded,
                                       _step_maps)


@triton.jit
def _split4(x, BLOCK_ENVS: tl.constexpr, BLOCK_STEPS: tl.constexpr):
    """[E, S] -> four [E, S // 4]: the steps 4i, 4i + 1, 4i + 2, 4i + 3 of each segment i."""
    even, odd = tl.split(tl.reshape(x, [BLOCK_ENVS, BLOCK_STEPS // 4, 2, 2]))
    x0, x2 = tl.split(even)
    x1, x3 = tl.split(odd)
    return x0, x1, x2, x3


@triton.jit
def _join4(x0, x1, x2, x3, BLOCK_ENVS: tl.constexpr, BLOCK_STEPS: tl.constexpr):
    """The inverse of _split4."""
    return tl.reshape(tl.join(tl.join(x0, x2), tl.join(x1, x3)), [BLOCK_ENVS, BLOCK_STEPS])


@triton.jit
def _ascending_chunk(
    rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, advantages_ptr, returns_ptr,
    row, env_mask, last_value, num_steps, start, carry, later_value, gamma, lam,
    BLOCK_ENVS: tl.constexpr, BLOCK_STEPS: tl.constexpr, NEXT_FROM_TILE: tl.constexpr,
    WHERE_TRUNCATED: tl.constexpr, STORE_RETURNS: tl.constexpr,
):
    # The tile splits into segments of 4 steps (what a thread holds of a float32 tile), each segment composes its
    # 4 maps in registers, and only the segments' maps cross threads, through a forward scan over the segments
    # gathered latest first.
    SEGMENTS: tl.constexpr = BLOCK_STEPS // 4
    lane = tl.arange(0, BLOCK_STEPS)[None, :]  # [1, S]
    segment = tl.arange(0, SEGMENTS)[None, :]  # [1, G]
    zeros = tl.zeros([BLOCK_ENVS, SEGMENTS], tl.int32)
    t = num_steps - start - BLOCK_STEPS + lane  # [1, S], increasing along the tile, ending at T - 1 - start
    mask = env_mask[:, None] & (t >= 0)  # [E, S]
    offs = row + t
    reward, value, terminated, truncated = _load_steps(rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, offs,
                                                       mask)
    if WHERE_TRUNCATED:
        truncated_value = _load_truncated_values(truncated_values_ptr, offs, mask, truncated)
    else:
        truncated_value = tl.load(truncated_values_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NEXT_FROM_TILE:  # V(s_{t+1}): the next step in the segment, or the next segment's first; then the later chunk's
        v0, v1, v2, v3 = _split4(value, BLOCK_ENVS, BLOCK_STEPS)
        next_first = tl.gather(v0, tl.minimum(segment + 1, SEGMENTS - 1) + zeros, axis=1)
        v4 = tl.where(segment == SEGMENTS - 1, later_value[:, None], next_first)
        next_value = _join4(v1, v2, v3, v4, BLOCK_ENVS, BLOCK_STEPS)
        later_value = tl.sum(tl.where(segment == 0, v0, 0.0), axis=1)
    else:
        next_value = _next_values_loaded(values_ptr, offs, t, mask, num_steps, last_value)
    decay, delta = _step_maps(reward, value, next_value, terminated, truncated, truncated_value, mask, gamma, lam)
    c0, c1, c2, c3 = _split4(decay, BLOCK_ENVS, BLOCK_STEPS)
    d0, d1, d2, d3 = _split4(delta, BLOCK_ENVS, BLOCK_STEPS)
    # Segment i's map from A after it to A at its first step, then the segments' maps latest first and scanned:
    # entry j of the scan is A at the first step of segment G-1-j, as a map of the carry (A after the chunk).
    latest_first = (SEGMENTS - 1 - segment) + zeros
    segment_decay = tl.gather(c0 * c1 * c2 * c3, latest_first, axis=1)
    segment_delta = tl.gather(d0 + c0 * (d1 + c1 * (d2 + c2 * d3)), latest_first, axis=1)
    segment_decay, segment_delta = tl.associative_scan((segment_decay, segment_delta), axis=1, combine_fn=_compose)
    first_advantage = segment_delta + segment_decay * carry[:, None]
    # A after segment i is A at the first step of segment i+1: scan entry G-2-i; after the last one, the carry.
    after = tl.gather(first_advantage, tl.maximum(SEGMENTS - 2 - segment, 0) + zeros, axis=1)
    a3 = d3 + c3 * tl.where(segment == SEGMENTS - 1, carry[:, None], after)
    a2 = d2 + c2 * a3
    a1 = d1 + c1 * a2
    a0 = d0 + c0 * a1
    advantage = _join4(a0, a1, a2, a3, BLOCK_ENVS, BLOCK_STEPS)
    tl.store(advantages_ptr + offs, advantage, mask=mask)
    if STORE_RETURNS:
        tl.store(returns_ptr + offs, advantage + value, mask=mask)
    carry = tl.sum(tl.where(segment == 0, a0, 0.0), axis=1)
    return carry, later_value


@triton.jit
def _gae_ascending_kernel(
    rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, last_values_ptr,
    advantages_ptr, returns_ptr,
    num_envs, num_steps, stride_env,
    gamma, lam,
    BLOCK_ENVS: tl.constexpr, BLOCK_STEPS: tl.constexpr, NEXT_FROM_TILE: tl.constexpr,
    WHERE_TRUNCATED: tl.constexpr, STORE_RETURNS: tl.constexpr,
):
    # The op's program (kernels/gae.py, _gae_scan_kernel) with the ascending chunk: BLOCK_ENVS envs, time walked
    # backwards in chunks of BLOCK_STEPS, the carry A passed from chunk to chunk.
    envs = tl.program_id(0) * BLOCK_ENVS + tl.arange(0, BLOCK_ENVS)  # [E]
    env_mask = envs < num_envs
    row = envs.to(tl.int64)[:, None] * stride_env  # [E, 1]
    last_value = tl.load(last_values_ptr + envs, mask=env_mask, other=0.0).to(tl.float32)  # [E]
    carry = tl.zeros([BLOCK_ENVS], dtype=tl.float32)  # A at the step after the chunk; A_T = 0
    later_value = last_value  # V at the step after the chunk
    for start in range(0, num_steps, BLOCK_STEPS):
        carry, later_value = _ascending_chunk(
            rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, advantages_ptr,
            returns_ptr, row, env_mask, last_value, num_steps, start, carry, later_value, gamma, lam,
            BLOCK_ENVS, BLOCK_STEPS, NEXT_FROM_TILE, WHERE_TRUNCATED, STORE_RETURNS)


def ascending_config(envs: int, steps: int, warps: int, stages: int | None = None, next_from_tile: bool = False,
                     where_truncated: bool = True) -> triton.Config:
    """An ascending-kernel config: the op's `scan_config` fields, and truncated_values read only where truncated
    (default) or whole."""
    extra = {} if stages is None else {"num_stages": stages}
    return triton.Config({"BLOCK_ENVS": envs, "BLOCK_STEPS": steps, "NEXT_FROM_TILE": next_from_tile,
                          "WHERE_TRUNCATED": where_truncated}, num_warps=warps, **extra)


def ascending_kernel(configs: list[triton.Config]):
    """The ascending kernel under an autotuner over `configs`, as the op's `scan_kernel` wraps its own: one config
    is launched as given, untimed, by `launch_scan_kernel`."""
    return triton.autotune(configs=configs, key=["num_envs", "num_steps"])(_gae_ascending_kernel)
