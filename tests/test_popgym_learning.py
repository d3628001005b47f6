"""Learning on POPGym's ports with the default configuration, compiled as `make train` runs on CPU: each task's
deterministic evaluation must beat the best memoryless policy (`memoryless_return`) by the margin stated.

Seed 1 on the 2-core CPU (one torch thread) evaluated at the figures in each test's comment. Each budget and
margin held for seeds 1-3 (CountRecall: 1-4) there, so other machines' numerics, which change the trajectory as
another seed would, should not fail them; docs/measurements.md has the figures and the whole Easy suite."""

import pytest

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs.popgym import memoryless_return
from recurrent_ppo.trainer import Trainer

CASES = [
    # task, steps, margin over the memoryless best: (memoryless best, seed 1's evaluation)
    ("popgym/PositionOnlyCartPoleEasy", 131_072, 0.5),  # (0.211, 1.000)
    ("popgym/RepeatPreviousEasy", 204_800, 0.6),  # (-0.490, 0.580)
    ("popgym/CountRecallEasy", 614_400, 0.2),  # (-0.923, -0.595)
]


@pytest.mark.slow
@pytest.mark.parametrize("task, steps, margin", CASES, ids=[case[0].split("/")[1] for case in CASES])
def test_beats_the_best_memoryless_policy(tmp_path, task, steps, margin):
    cfg = TrainConfig(env=task, total_steps=steps, seed=1, eval_episodes=100, progress=False, device="cpu",
                      run_dir=str(tmp_path / "run"))
    summary = Trainer(cfg).train()
    assert summary["compile_mode"] == "default"
    best_memoryless = memoryless_return(task)
    assert summary["eval_return_mean"] >= best_memoryless + margin, (best_memoryless, summary)
