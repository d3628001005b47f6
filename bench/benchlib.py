"""Shared pieces of the benchmark suites: size profiles, the timing helper, the calibration workload, and the
throughput registry.

A profile fixes every size a suite runs at, so one machine always produces the same benchmark names:
`cuda` (realistic sizes, 4096+ envs), `cpu` (the trainer's defaults; a few seconds per benchmark on 2 cores) and
`tiny` (smallest sizes, no compile modes: what tests/test_bench.py runs to check the suites work).
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
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
    threads: int | None = None
    """torch's intra-op threads during the run, None for torch's default. On a shared CPU, one: with two, every
    parallel region waits for a peer the OS has descheduled, which under load slows small ops many times over
    and unevenly, where one thread slows in proportion to its share of the cores (bench/README.md)."""


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
                   compile=True, budget_s=1.5, min_rounds=5, max_rounds=2000, threads=1),
    "tiny": Profile("tiny", "cuda" if torch.cuda.is_available() else "cpu", ((16, 8),), ((16, 8),),
                    TrainConfig(num_envs=8, num_steps=16, seq_len=8, hidden_dim=16, num_minibatches=2,
                                update_epochs=1, total_steps=128, progress=False, eval_episodes=0,
                                device="cuda" if torch.cuda.is_available() else "cpu"),
                    compile=False, budget_s=0.02, min_rounds=2, max_rounds=20,
                    threads=None if torch.cuda.is_available() else 1),
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


CALIBRATION_SEED = 1234  # fixed weights and inputs: the same work in every run
CALIBRATION_SAMPLES = 15  # calibration calls spread over each benchmark's rounds


def calibration_workload(profile: Profile, device: torch.device) -> Callable[[], torch.Tensor]:
    """The gate's yardstick (bench/check.py): eager LSTM-cell steps over the profile's envs, hidden size and
    rollout length, each with a value head and a few elementwise ops, on its device. What the suites mostly do
    (Python dispatch, small matmuls, memory traffic) without any of our code, which a change under test may
    speed up or slow down."""
    num_envs, hidden, num_steps = profile.train.num_envs, profile.train.hidden_dim, profile.train.num_steps
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    cell = torch.nn.LSTMCell(hidden, hidden).to(device)
    for parameter in cell.parameters():
        parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * hidden ** -0.5)
    head = (torch.randn(hidden, 1, generator=generator) * hidden ** -0.5).to(device)
    inputs = torch.randn(num_steps, num_envs, hidden, generator=generator).to(device)

    @torch.inference_mode()
    def run() -> torch.Tensor:
        h = c = torch.zeros(num_envs, hidden, device=device)
        total = torch.zeros(num_envs, 1, device=device)
        for x in inputs:
            h, c = cell(x, (h, c))
            total = total * 0.99 + torch.tanh(h @ head)
        return total

    return run


class InterleavedCalibration:
    """A pedantic `setup`: before every `every`-th round, one timed call of the calibration workload, so that the
    calibration sees the same load as the benchmark's rounds around it (a shared machine's load comes and goes
    within a session)."""

    def __init__(self, profile: Profile, device: torch.device, every: int):
        self.workload, self.device, self.every = calibration_workload(profile, device), device, every
        self.rounds, self.samples = 0, []
        self.workload()  # first-call allocations stay out of the samples
        synchronize(device)

    def __call__(self) -> None:
        self.rounds += 1
        if (self.rounds - 1) % self.every == 0:
            start = time.perf_counter()
            self.workload()
            synchronize(self.device)
            self.samples.append(time.perf_counter() - start)

    def median_and_iqr(self) -> tuple[float, float]:
        """Seconds: the samples' median and interquartile range (0 from a single sample)."""
        if len(self.samples) < 2:
            return self.samples[0], 0.0
        quartiles = statistics.quantiles(self.samples, n=4)
        return statistics.median(self.samples), quartiles[2] - quartiles[0]


def measure(benchmark, fn: Callable[[], object], *, device: torch.device, profile: Profile, warmup: int,
            compiled: bool, items: int | None = None, items_name: str = "env_steps") -> None:
    """Time `fn` with pytest-benchmark: `warmup` untimed calls first (compilation, CUDA graph capture), then
    rounds of one call each, synchronized inside the timed function on CUDA.

    Records in `benchmark.extra_info`: `first_call_s` (mostly compilation where `compiled`; kept if the caller
    timed an earlier first call), `peak_memory_bytes` allocated during the timed rounds, the benchmark's live
    tensors included (CUDA; None on CPU), `calibration_median_s` and `calibration_iqr_s` of the calibration
    workload timed between the rounds (InterleavedCalibration), and with `items` processed per call
    `<items_name>_per_s` = items / median. Compiled functions run under `fail_on_recompile`: a recompile in the
    timed region is an error, not a slow sample.
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
    calibration = InterleavedCalibration(profile, device, every=max(1, rounds // CALIBRATION_SAMPLES))
    stance = torch.compiler.set_stance("fail_on_recompile") if compiled else contextlib.nullcontext()
    with stance:
        benchmark.pedantic(timed, setup=calibration, rounds=rounds, iterations=1)
    info = benchmark.extra_info
    info.setdefault("first_call_s", durations[0])
    info["calibration_median_s"], info["calibration_iqr_s"] = calibration.median_and_iqr()
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
