"""One LSTM / GRU layer, forward + backward over `[B, L]` with 2% resets (bench/rnn_compare.py's step, fp32):
the reference loop eager (`reference`) and compiled (`compiled_loop`, CUDA only), the fused Triton scans (`fused`,
CUDA only), and nn.LSTM / nn.GRU without resets (`nn`: cuDNN on a GPU; a different function, the speed to reach).

Each provider is first checked against the float64 reference at the benchmark's size, so a fast wrong answer fails
instead of being timed. env_steps are B * L per call.
"""

from __future__ import annotations

import time

import pytest
import torch

import benchlib
from rnn_compare import Layer, check, provider_fn, tolerance

pytestmark = pytest.mark.benchmark(group="rnn")

# (B, L, H) per profile: the trainer-scale GPU sizes of rnn_compare.py, a CPU size, and the smallest.
RNN_SIZES = {"cuda": ((2048, 16, 256), (512, 64, 256)), "cpu": ((64, 16, 64),), "tiny": ((4, 4, 8),)}


def pytest_generate_tests(metafunc):
    if "rnn_case" not in metafunc.fixturenames:
        return
    profile = benchlib.resolve_profile(metafunc.config.getoption("--bench-profile"))
    params = []
    for batch, seq_len, hidden in RNN_SIZES[profile.name]:
        for cell in ("lstm", "gru"):
            for provider in ("reference", "compiled_loop", "fused", "nn"):
                marks = []
                if provider == "fused" and profile.device != "cuda":
                    marks = [pytest.mark.skip(reason="fused RNN scans: CUDA only")]
                elif provider == "compiled_loop" and profile.device != "cuda":
                    # inductor compiles the L-step unrolled loop and its backward for minutes on 2 cores
                    marks = [pytest.mark.skip(reason="compiled RNN loop: CUDA only (its CPU compile takes minutes)")]
                params.append(pytest.param((cell, provider, batch, seq_len, hidden), marks=marks,
                                           id=f"{cell}-{provider}-B{batch}-L{seq_len}-H{hidden}"))
    metafunc.parametrize("rnn_case", params)


def test_rnn(benchmark, profile, rnn_case):
    cell, provider, batch, seq_len, hidden = rnn_case
    device = torch.device(profile.device)
    benchlib.fresh_state()
    layer = Layer(cell, batch, seq_len, hidden, torch.float32, device)
    fn = provider_fn(layer, provider, "inductor")

    start = time.perf_counter()
    result = fn()  # the first call also compiles (compiled_loop) or JITs (fused)
    benchlib.synchronize(device)
    benchmark.extra_info["first_call_s"] = time.perf_counter() - start
    keep = torch.ones_like(layer.keep) if provider == "nn" else layer.keep  # nn.LSTM / nn.GRU cannot reset
    verdict = check(result, layer.oracle(keep), tolerance(provider, torch.float32))["check"]
    assert verdict == "ok", f"{provider} differs from the float64 reference: {verdict}"

    benchmark.extra_info.update(cell=cell, provider=provider, batch=batch, seq_len=seq_len, hidden=hidden)
    benchlib.measure(benchmark, fn, device=device, profile=profile, warmup=2, compiled=provider == "compiled_loop",
                     items=batch * seq_len)
