"""pytest-benchmark set-up: the size profile (`--bench-profile`), parametrization by provider and compile mode,
machine facts in the JSON, and the ours-vs-CleanRL throughput report at the end of the session.

Run through `make bench` / `make bench-check`, or by hand:
    .venv/bin/python -m pytest bench --benchmark-enable [--bench-profile tiny] [--benchmark-json out.json]
(pyproject's addopts disable benchmarks for the test suite; `--benchmark-enable` turns them back on.)
"""

from __future__ import annotations

import os

import pytest
import torch

import benchlib
import machine

PROFILE_OPTION = "--bench-profile"
_LOAD_AT_START = pytest.StashKey[object]()


def pytest_addoption(parser):
    parser.addoption(PROFILE_OPTION, default="auto", choices=["auto", *benchlib.PROFILES],
                     help="benchmark sizes: auto (cuda with a GPU, else cpu), cuda, cpu, or tiny (smallest sizes, "
                          "no compile modes: checks that the suites run)")


def _profile(config) -> benchlib.Profile:
    return benchlib.resolve_profile(config.getoption(PROFILE_OPTION))


@pytest.fixture(scope="session")
def profile(request) -> benchlib.Profile:
    return _profile(request.config)


@pytest.fixture(scope="session", autouse=True)
def _threads(profile):
    if profile.threads is not None:  # before any benchmark compiles: inductor's CPU kernels take it too
        torch.set_num_threads(profile.threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _mode_param(profile: benchlib.Profile, mode: str, value=None, id: str | None = None):
    reason = benchlib.skip_reason(profile, mode)
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return pytest.param(mode if value is None else value, id=id or mode, marks=marks)


def pytest_generate_tests(metafunc):
    """Parametrize by the profile's sizes: `gae_case` (provider x size) and `compile_mode`."""
    profile = _profile(metafunc.config)
    if "gae_case" in metafunc.fixturenames:
        params = []
        for n, t in profile.gae_sizes:
            size = f"N{n}-T{t}"
            params += [pytest.param((p, n, t), id=f"{p}-{size}") for p in ("cleanrl_loop", "reference")]
            if (n, t) in profile.gae_compiled_sizes:
                params.append(_mode_param(profile, "default", ("compiled_loop", n, t), f"compiled_loop-{size}"))
            marks = [] if profile.device == "cuda" else [pytest.mark.skip(reason="triton GAE: CUDA only")]
            for provider in ("triton", "triton_loop", "triton_graph", "triton_graph_adv"):
                params.append(pytest.param((provider, n, t), id=f"{provider}-{size}", marks=marks))
        metafunc.parametrize("gae_case", params)
    if "compile_mode" in metafunc.fixturenames:
        metafunc.parametrize("compile_mode", [_mode_param(profile, m) for m in benchlib.COMPILE_MODES])
    if "train_provider" in metafunc.fixturenames:
        params = [_mode_param(profile, m, ("ours", m), f"ours-{m}") for m in benchlib.COMPILE_MODES]
        cuda_only = [] if profile.device == "cuda" else [pytest.mark.skip(reason="rollout_graph: CUDA only")]
        params.append(pytest.param(("ours-rollout-graph", "default"), id="ours-rollout-graph", marks=cuda_only))
        params.append(pytest.param(("cleanrl", benchlib.EAGER), id="cleanrl"))
        metafunc.parametrize("train_provider", params)


def pytest_configure(config):
    # Read before anything runs: a loaded machine (another job on the same cores) makes medians meaningless.
    config.stash[_LOAD_AT_START] = os.getloadavg() if hasattr(os, "getloadavg") else None


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(machine.machine_info())
    machine_info["bench_profile"] = _profile(config).name
    machine_info["load_average_at_start"] = config.stash.get(_LOAD_AT_START, None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Throughput measured in this session, over the CleanRL-style baseline's: the training iteration, and GAE."""
    write = terminalreporter.write_line
    runs = benchlib.THROUGHPUT.get("train_iteration", {})
    if runs:
        cfg = _profile(config).train
        terminalreporter.section("ours vs CleanRL-style baseline: one PPO iteration")
        write(f"{cfg.env}, {cfg.num_envs} envs x {cfg.num_steps} steps, hidden {cfg.hidden_dim}, "
              f"{cfg.update_epochs} epochs x {cfg.num_minibatches} minibatches, on {cfg.device}; median env-steps/s")
        load = config.stash.get(_LOAD_AT_START, None)
        # More runnable work than cores (the 1-minute average, so a just-finished run of ours counts a little).
        if load is not None and load[0] > (os.cpu_count() or 1):
            write(f"note: load average {load[0]:.1f} on {os.cpu_count()} cores at the start: other work shared the "
                  "machine, so these figures are pessimistic and noisy")
        _write_ratios(write, runs, "cleanrl")
    suite = benchlib.THROUGHPUT.get("suite_rollout_step", {})
    if suite:
        terminalreporter.section("rollout step per task, vs stateless-cartpole's")
        write(f"{_profile(config).train.num_envs} envs; median env-steps/s")
        _write_ratios(write, suite, "stateless-cartpole")
    gae = benchlib.THROUGHPUT.get("gae", {})
    if gae:
        terminalreporter.section("GAE: providers vs the CleanRL-style loop")
        write("median env-steps/s per size")
        for size in dict.fromkeys(param.split("-", 1)[1] for param in gae):
            write(size)
            _write_ratios(write, {p.split("-", 1)[0]: v for p, v in gae.items() if p.endswith(f"-{size}")},
                          "cleanrl_loop")


def _write_ratios(write, runs: dict[str, float], baseline_name: str) -> None:
    baseline = runs.get(baseline_name)
    width = max(22, *map(len, runs))
    for provider, per_s in sorted(runs.items(), key=lambda kv: kv[0] != baseline_name):
        ratio = "" if baseline is None or provider == baseline_name else f"  {per_s / baseline:7.2f}x baseline"
        write(f"  {provider:<{width}} {per_s:>14,.0f}{ratio}")
    if baseline is None:
        write(f"  ({baseline_name} did not run in this session: no ratio)")
