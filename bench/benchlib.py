"""Shared pieces of the benchmark suites: size profiles, the timing helper, and the throughput registry.

A profile fixes every size a suite runs at, so one machine always produces the same benchmark names:
`cuda` (realistic sizes, 4096+ envs), `cpu` (the trainer's defaults; a few seconds per benchmark on 2 cores) and
`tiny` (smallest sizes, no compile modes: what tests/test_bench.py runs to check the suites work).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from recurrent_ppo.config import TrainConfig

EAGER = "off"
COMPILE_MODES = ("off", "default", "reduce-overhead")
CUDA_ONLY_MODES = ("reduce-overhead",)  # CUDA graphs; on CPU the mode would only add compile time


@dataclass(frozen=True)
class Profile:
    """The sizes and timing budget of one benchmark run."""

    name: str
    device: str
    """Device the suites run on."""
    gae_sizes: tuple[tuple[int, int], ...]
    """(num_envs, num_steps) of the GAE op benchmarks."""
    gae_compiled_sizes: tuple[tuple[int, int], ...]
    """The subset of gae_sizes that compiled_loop runs at (each size is one inductor compile)."""
    train: TrainConfig
    """Sizes and PPO settings of the rollout-step, minibatch-step and training-iteration benchmarks."""
    compile: bool
    """Whether compile modes run at all."""
    budget_s: float
    """Timed seconds to aim for per benchmark; rounds = budget / (time of one warm call), clamped."""
    min_rounds: int
    max_rounds: int


def _cuda_gae_sizes() -> tuple[tuple[int, int], ...]:
    # T outer, N inner: sizes of one T sit together in the report.
    return tuple((n, t) for t in (32, 128, 512) for n in (1024, 4096, 16384, 131072))


PROFILES: dict[str, Profile] = {
    # The compiled loop unrolls T steps, so it compiles only up to T=128 (T=512 would take minutes per size).
    "cuda": Profile("cuda", "cuda", _cuda_gae_sizes(), tuple((n, t) for n, t in _cuda_gae_sizes() if t <= 128),
                    TrainConfig(num_envs=4096, device="cuda", progress=False, eval_episodes=0),
                    compile=True, budget_s=2.0, min_rounds=10, max_rounds=1000),
    # The trainer's CPU defaults (32 envs x 128 steps) and a wider GAE; compiled GAE only at the trainer's size.
    "cpu": Profile("cpu", "cpu", ((32, 128), (1024, 32), (1024, 128)), ((32, 128),),
                   TrainConfig(device="cpu", progress=False, eval_episodes=0),
                   compile=True, budget_s=1.5, min_rounds=5, max_rounds=2000),
    "tiny": Profile("tiny", "cuda" if torch.cuda.is_available() else "cpu", ((16, 8),), ((16, 8),),
                    TrainConfig(num_envs=8, num_steps=16, seq_len=8, hidden_dim=16, num_minibatches=2,
                                update_epochs=1, total_steps=128, progress=False, eval_episodes=0,
                                device="cuda" if torch.cuda.is_available() else "cpu"),
                    compile=False, budget_s=0.02, min_rounds=2, max_rounds=20),
}


def resolve_profile(name: str) -> Profile:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown benchmark profile {name!r}; choose auto or one of {sorted(PROFILES)}")
    profile = PROFILES[name]
    if profile.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"benchmark profile {name!r} needs CUDA, and torch sees no CUDA device")
    return profile


def skip_reason(profile: Profile, mode: str) -> str | None:
    """Why compile mode `mode` does not run under `profile`, or None when it runs."""
    if mode in CUDA_ONLY_MODES and profile.device != "cuda":
        return f"compile mode {mode} uses CUDA graphs: CUDA only"
    if mode != EAGER and not profile.compile:
        return f"profile {profile.name} runs no compile modes"
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(benchmark, fn: Callable[[], object], *, device: torch.device, profile: Profile, warmup: int,
            compiled: bool, items: int | None = None, items_name: str = "env_steps") -> None:
    """Time `fn` with pytest-benchmark: `warmup` untimed calls first (compilation, CUDA graph capture), then
    rounds of one call each, synchronized inside the timed function on CUDA.

    Records in `benchmark.extra_info`: `first_call_s` (mostly compilation where `compiled`; kept if the caller
    timed an earlier first call), `peak_memory_bytes` allocated during the timed rounds, the benchmark's live
    tensors included (CUDA; None on CPU), and with `items` processed per call `<items_name>_per_s` = items / median.
    Compiled functions run under `fail_on_recompile`: a recompile in the timed region is an error, not a slow sample.
    """
    if warmup < 1:
        raise ValueError("measure needs at least one warm-up call: it sizes the rounds from it")

    def timed() -> None:
        fn()
        synchronize(device)

    durations = []
    for _ in range(warmup):
        start = time.perf_counter()
        timed()
        durations.append(time.perf_counter() - start)
    rounds = max(profile.min_rounds, min(profile.max_rounds, math.ceil(profile.budget_s / durations[-1])))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stance = torch.compiler.set_stance("fail_on_recompile") if compiled else contextlib.nullcontext()
    with stance:
        benchmark.pedantic(timed, rounds=rounds, iterations=1)
    info = benchmark.extra_info
    info.setdefault("first_call_s", durations[0])
    info["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if benchmark.stats is not None and items is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        info[f"{items_name}_per_s"] = items / median
        THROUGHPUT.setdefault(benchmark.group or benchmark.name, {})[benchmark.param] = items / median


def gae_inputs(num_envs: int, num_steps: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Rollout-like inputs: ~2% terminations, ~0.5% truncations (never both), as the buffer stores them."""
    shape = (num_envs, num_steps)
    terminated = torch.rand(shape, device=device) < 0.02
    truncated = (torch.rand(shape, device=device) < 0.005) & ~terminated
    return dict(rewards=torch.randn(shape, device=device), values=torch.randn(shape, device=device),
                terminated=terminated, truncated=truncated, truncated_values=torch.randn(shape, device=device),
                last_values=torch.randn(num_envs, device=device))


def fresh_state() -> None:
    """Start each benchmark from an empty Dynamo cache and no garbage from the previous one.

    Every benchmark builds new modules whose bound methods share code objects: piling their guards up would
    reach the recompile limit, past which Dynamo quietly runs eager. And tensors the caches kept alive would
    count in the next benchmark's peak memory."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# group -> provider id -> items per second (median), filled by `measure` for the end-of-session report.
THROUGHPUT: dict[str, dict[str, float]] = {}


def cuda_graphed(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` captured in a CUDA graph: the returned callable replays it and returns the outputs of the capture,
    which every replay overwrites. A replay costs one graph launch, whatever Python `fn` runs on the host."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # first calls (JIT, autotuning, allocator warm-up) stay out of the capture
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()

    def replay() -> Any:
        graph.replay()
        return outputs

    return replay
