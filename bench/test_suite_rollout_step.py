"""One rollout step of each POPGym port (Easy) beside stateless-cartpole's: the compiled policy + env step and the
buffer write, as `collect` runs it, at the profile's envs and the compile mode the trainer picks on its device."""

from __future__ import annotations

import pytest
import torch

import benchlib
from recurrent_ppo.benchmark import SUITES
from recurrent_ppo.trainer import Trainer

pytestmark = pytest.mark.benchmark(group="suite_rollout_step")

REFERENCE_TASK = "stateless-cartpole"
TASKS = (REFERENCE_TASK, *SUITES["popgym-easy"]())


@pytest.mark.parametrize("task", TASKS)
def test_suite_rollout_step(benchmark, profile, task, tmp_path):
    benchlib.fresh_state()
    cfg = profile.train.replace(env=task, run_dir=str(tmp_path))
    mode = cfg.resolved_compile_mode(cfg.resolved_device()) if profile.compile else benchlib.EAGER
    trainer = Trainer(cfg.replace(compile_mode=mode))
    collector, buffer = trainer.collector, trainer.buffer

    def rollout_step() -> None:
        if buffer.full:  # the buffer wraps around instead of filling up
            buffer.reset()
        collector.advance()

    benchmark.extra_info.update(task=task, compile_mode=mode, num_envs=cfg.num_envs, hidden_dim=cfg.hidden_dim)
    with torch.inference_mode():
        benchlib.measure(benchmark, rollout_step, device=trainer.device, profile=profile,
                         warmup=3 if mode != benchlib.EAGER else 1, compiled=mode != benchlib.EAGER,
                         items=cfg.num_envs)
