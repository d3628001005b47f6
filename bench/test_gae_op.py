"""GAE over `[num_envs, num_steps]`: CleanRL's Python loop, our pure-torch reference (eager, then compiled), and
the Triton kernels (`triton`: the default chunked-scan kernel; `triton_loop`: the lab's one-lane-per-env loop kernel;
`triton_graph`: the scan kernel's op replayed from a CUDA graph, as a CUDA-graphed training step runs it;
`triton_graph_adv`: the same with `returns=False`, advantages alone, as the trainer calls it).

Each provider is first checked against `gae_reference` at the benchmark's size, so a fast wrong answer fails
instead of being timed.
"""

from __future__ import annotations

import time

import pytest
import torch

import benchlib
from cleanrl_baseline import cleanrl_gae
from gae_lab.loop_kernel import gae_triton_loop
from recurrent_ppo.kernels.gae import gae_reference, gae_triton

pytestmark = pytest.mark.benchmark(group="gae")
GAMMA, LAMBDA = 0.99, 0.95


def provider_fn(provider: str, inputs: dict[str, torch.Tensor]):
    if provider == "cleanrl_loop":
        return lambda: cleanrl_gae(**inputs, gamma=GAMMA, gae_lambda=LAMBDA)
    if provider == "reference":  # what the trainer runs on CPU
        return lambda: gae_reference(**inputs, gamma=GAMMA, lam=LAMBDA)
    if provider == "compiled_loop":
        # Static shapes, as a trainer's fixed-size buffer has: one compile per size.
        compiled = torch.compile(gae_reference, fullgraph=True, dynamic=False)
        return lambda: compiled(**inputs, gamma=GAMMA, lam=LAMBDA)
    if provider == "triton":
        return lambda: gae_triton(**inputs, gamma=GAMMA, lam=LAMBDA)
    if provider == "triton_loop":
        return lambda: gae_triton_loop(**inputs, gamma=GAMMA, lam=LAMBDA)
    if provider == "triton_graph":
        return benchlib.cuda_graphed(lambda: gae_triton(**inputs, gamma=GAMMA, lam=LAMBDA))
    if provider == "triton_graph_adv":
        return benchlib.cuda_graphed(lambda: gae_triton(**inputs, gamma=GAMMA, lam=LAMBDA, returns=False))
    raise ValueError(f"unknown GAE provider {provider!r}")


def test_gae(benchmark, profile, gae_case):
    provider, num_envs, num_steps = gae_case
    device = torch.device(profile.device)
    compiled = provider == "compiled_loop"
    benchlib.fresh_state()
    inputs = benchlib.gae_inputs(num_envs, num_steps, device)
    fn = provider_fn(provider, inputs)

    start = time.perf_counter()
    advantages, returns = fn()  # the first call also compiles (compiled_loop) or JITs (triton)
    benchlib.synchronize(device)
    benchmark.extra_info["first_call_s"] = time.perf_counter() - start
    expected = gae_reference(**inputs, gamma=GAMMA, lam=LAMBDA)
    torch.testing.assert_close(advantages, expected[0], rtol=1e-4, atol=1e-4,
                               msg=lambda m: f"{provider} advantages differ from gae_reference: {m}")
    if provider.endswith("_adv"):
        assert returns is None, f"{provider} computes advantages alone, yet gave returns"
    else:
        torch.testing.assert_close(returns, expected[1], rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"{provider} returns differ from gae_reference: {m}")

    benchmark.extra_info.update(provider=provider, num_envs=num_envs, num_steps=num_steps)
    benchlib.measure(benchmark, fn, device=device, profile=profile, warmup=2, compiled=compiled,
                     items=num_envs * num_steps)
