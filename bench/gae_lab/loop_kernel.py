"""The plain Triton GAE, kept as the benchmarks' point of comparison for the scan kernel the trainer runs
(recurrent_ppo.kernels.gae): one lane per env walking time backwards, each of the num_steps dependent iterations
waiting on its own strided loads. `gae_triton_loop` takes and returns what `gae_triton` does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recurrent_ppo.kernels.gae import Outputs, triton_outputs

BLOCK_ENVS = 128  # envs per program, one per lane
INPUTS = ("rewards", "values", "terminated", "truncated", "truncated_values", "last_values")  # the kernel's order


@triton.jit
def _gae_loop_kernel(
    rewards_ptr, values_ptr, terminated_ptr, truncated_ptr, truncated_values_ptr, last_values_ptr,
    advantages_ptr, returns_ptr,
    num_envs, num_steps, stride_env,
    gamma, lam,
    BLOCK_ENVS: tl.constexpr, STORE_RETURNS: tl.constexpr,
):
    envs = tl.program_id(0) * BLOCK_ENVS + tl.arange(0, BLOCK_ENVS)
    mask = envs < num_envs
    row = envs.to(tl.int64) * stride_env
    next_value = tl.load(last_values_ptr + envs, mask=mask, other=0.0).to(tl.float32)
    next_advantage = tl.zeros([BLOCK_ENVS], dtype=tl.float32)
    for i in range(num_steps):
        offs = row + (num_steps - 1 - i)
        reward = tl.load(rewards_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        value = tl.load(values_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        terminated = tl.load(terminated_ptr + offs, mask=mask, other=0).to(tl.float32)
        truncated = tl.load(truncated_ptr + offs, mask=mask, other=0).to(tl.float32)
        truncated_value = tl.load(truncated_values_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        bootstrap = tl.where(truncated != 0.0, truncated_value, next_value)
        delta = reward + gamma * bootstrap * (1.0 - terminated) - value
        not_done = (1.0 - terminated) * (1.0 - truncated)
        # fp32 whatever the scalars' type: inductor passes Python floats to user kernels as fp64.
        advantage = (delta + gamma * lam * not_done * next_advantage).to(tl.float32)
        tl.store(advantages_ptr + offs, advantage, mask=mask)
        if STORE_RETURNS:
            tl.store(returns_ptr + offs, advantage + value, mask=mask)
        next_advantage = advantage
        next_value = value


def gae_triton_loop(*, gamma: float, lam: float, out: Outputs | None = None, returns: bool = True,
                    **inputs: torch.Tensor) -> Outputs:
    """GAE by the loop kernel: gae_triton's arguments (its six input tensors by name), checks and outputs.
    Launched directly: torch.compile traces a user-defined Triton kernel as it is, and this one never runs inside
    the trainer's traced code."""
    advantages, returns_out = triton_outputs(inputs, out, returns)
    num_envs, num_steps = inputs["rewards"].shape
    _gae_loop_kernel[(triton.cdiv(num_envs, BLOCK_ENVS),)](
        *(inputs[name] for name in INPUTS), advantages, returns_out, num_envs, num_steps, num_steps, float(gamma),
        float(lam), BLOCK_ENVS=BLOCK_ENVS, STORE_RETURNS=returns_out is not None)
    return advantages, returns_out
