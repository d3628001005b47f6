"""One full training iteration (rollout, GAE, epochs x minibatches of PPO), as env-steps/s: ours per compile
mode, and the CleanRL-style baseline at the same sizes and settings in the same session."""

from __future__ import annotations

import pytest

import benchlib
from cleanrl_baseline import CleanRLPPO
from recurrent_ppo.trainer import Trainer

pytestmark = pytest.mark.benchmark(group="train_iteration")


def test_train_iteration(benchmark, profile, train_provider, tmp_path):
    provider, compile_mode = train_provider
    compiled = compile_mode != benchlib.EAGER
    benchlib.fresh_state()
    cfg = profile.train.replace(compile_mode=compile_mode, run_dir=str(tmp_path),
                                rollout_graph=provider == "ours-rollout-graph")
    runner = CleanRLPPO(cfg) if provider == "cleanrl" else Trainer(cfg)
    device = cfg.resolved_device()

    benchmark.extra_info.update(provider=provider, compile_mode=compile_mode, num_envs=cfg.num_envs,
                                num_steps=cfg.num_steps, hidden_dim=cfg.hidden_dim)
    # Iteration 0 every time: the learning rate stays put, and the work per iteration does not depend on it.
    benchlib.measure(benchmark, lambda: runner.train_iteration(0), device=device, profile=profile,
                     warmup=3 if compiled else 1, compiled=compiled, items=cfg.batch_size)
