"""One rollout step for all envs: the (compiled) policy + env step and the buffer write, as `collect` runs it."""

from __future__ import annotations

import pytest
import torch

import benchlib
from recurrent_ppo.trainer import Trainer

pytestmark = pytest.mark.benchmark(group="rollout_step")


def test_rollout_step(benchmark, profile, compile_mode, tmp_path):
    compiled = compile_mode != benchlib.EAGER
    benchlib.fresh_state()
    trainer = Trainer(profile.train.replace(compile_mode=compile_mode, run_dir=str(tmp_path)))
    collector, buffer = trainer.collector, trainer.buffer

    def rollout_step() -> None:
        # The body of RolloutCollector.collect's loop; the buffer wraps around instead of filling up.
        if buffer.full:
            buffer.reset()
        collector.advance()

    benchmark.extra_info.update(compile_mode=compile_mode, num_envs=trainer.cfg.num_envs,
                                hidden_dim=trainer.cfg.hidden_dim)
    with torch.inference_mode():  # as collect() runs
        benchlib.measure(benchmark, rollout_step, device=trainer.device, profile=profile,
                         warmup=3 if compiled else 1, compiled=compiled, items=trainer.cfg.num_envs)
