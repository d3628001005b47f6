"""An env that fails mid-run stops it with one error naming the env, the iteration and the step, and loses no
work: the last completed iteration is on disk, and --resume continues from it."""

import json

import pytest

from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import CartPole
from recurrent_ppo.trainer import Trainer, TrainingFailed

pytest.importorskip("gymnasium")

TINY = ["--num-envs", "4", "--num-steps", "16", "--seq-len", "8", "--num-minibatches", "2", "--update-epochs", "1",
        "--hidden-dim", "16", "--eval-episodes", "0", "--device", "cpu", "--compile-mode", "off", "--no-progress"]


def iterations_logged(run) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_gym_env_raising_mid_run_keeps_the_completed_iterations_and_resume_goes_on(tmp_path, capsys):
    """Each copy raises at its 40th step: in iteration 2 (16 steps per iteration), at rollout step 7. Exit 1, one
    line, with the default --checkpoint-every (50) the two completed iterations are checkpointed anyway; a resume
    (whose fresh copies take 32 steps, not 40) finishes the run."""
    from tests.gym_envs import register_breaking

    env = f"gym:{register_breaking('RaisesAt40', at=40)}"
    run = tmp_path / "run"
    assert main(["train", "--env", env, *TINY, "--total-steps", str(4 * 16 * 4), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert (f"the rollout of iteration 2 failed at step 7 of 16 (env {env}): RuntimeError: the simulator crashed at "
            f"its step 40; the checkpoint of the 2 completed iterations is kept: {run / 'checkpoint.pt'}; resume "
            f"with: recurrent-ppo train --resume {run}") in err, err
    state = read_checkpoint(run)
    assert (state["iteration"], state["global_step"]) == (2, 2 * 64)
    assert iterations_logged(run) == [0, 1]

    assert main(["train", "--resume", str(run)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "resuming after iteration 2 with fresh episodes, reseeded: the checkpoint was written when the rollout " \
           "of iteration 2 failed" in out, out
    assert iterations_logged(run) == [0, 1, 2, 3]
    assert read_checkpoint(run)["global_step"] == 4 * 64


def test_a_wrong_observation_shape_mid_run_names_the_env_copy_field_and_step(tmp_path, capsys):
    """At its 300th step each copy returns an 'x' of shape (3,) against its Box (2,): iteration 4 with 64 steps per
    iteration, rollout step 43. The adapter's check names it before gymnasium's batching would fail
    ("Output array is the wrong shape"), and the run stops with exit 1, not 2 (the usage-error code)."""
    from tests.gym_envs import register_breaking

    env = f"gym:{register_breaking('WrongShapeAt300', at=300, wrong_shape=True)}"
    run = tmp_path / "run"
    flags = [*TINY, "--num-steps", "64", "--seq-len", "16"]
    assert main(["train", "--env", env, *flags, "--total-steps", str(4 * 64 * 6), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert (f"the rollout of iteration 4 failed at step 43 of 64 (env {env}): ValueError: {env}: env 0's step() "
            f"number 300 returned an observation 'x' of shape (3,) and dtype float32; expected shape (2,)") in err, err
    assert f"the checkpoint of the 4 completed iterations is kept: {run / 'checkpoint.pt'}" in err, err
    assert "Output array is the wrong shape" not in err


def test_a_failure_before_any_iteration_completed_says_there_is_no_checkpoint(tmp_path, capsys):
    """--debug adds the traceback, whose cause is the env's own exception; the exit code stays 1."""
    from tests.gym_envs import register_breaking

    env = f"gym:{register_breaking('RaisesAt3', at=3)}"
    run = tmp_path / "run"
    assert main(["train", "--env", env, *TINY, "--total-steps", "128", "--run-dir", str(run), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: the simulator crashed at its step 3" in err, err
    assert err.strip().splitlines()[-1].endswith("no iteration had completed, so there is no checkpoint")
    assert not (run / "checkpoint.pt").exists()


def test_an_evaluation_env_raising_mid_run_keeps_the_iteration_it_evaluated(tmp_path, capsys):
    """Evaluation copies step 64 per round (the evaluator looks every 64 steps), training ones 16 per iteration: at
    their 100th step the evaluation after iteration 1 raises. That iteration's training is whole: it is logged and
    checkpointed before the run stops."""
    from tests.gym_envs import register_breaking

    env = f"gym:{register_breaking('RaisesAt100', at=100)}"
    run = tmp_path / "run"
    assert main(["train", "--env", env, *TINY, "--eval-every", "1", "--eval-episodes", "4", "--total-steps",
                 str(4 * 16 * 4), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert (f"the evaluation after iteration 1 failed (env {env}): RuntimeError: the simulator crashed at its step "
            f"100; the checkpoint of the 2 completed iterations is kept") in err, err
    assert read_checkpoint(run)["iteration"] == 2 and iterations_logged(run) == [0, 1]


class RaisingCartPole(CartPole):
    """CartPole whose `raise_at`-th step raises (a Python counter: eager only)."""

    raise_at = 0

    def __init__(self, num_envs, device):
        super().__init__(num_envs, device)
        self.steps = 0

    def step(self, actions):
        self.steps += 1
        if self.steps == self.raise_at:
            raise RuntimeError(f"device env broke at its step {self.steps}")
        return super().step(actions)


def test_a_device_env_raising_mid_run_is_checkpointed_to_resume_with_fresh_episodes(tmp_path, monkeypatch):
    """The rollout moved the env's state, the carry and the generators past the last completed iteration; the
    checkpoint keeps none of them, so the resume reseeds fresh episodes instead of claiming an exact one."""
    monkeypatch.setattr(RaisingCartPole, "raise_at", 16 * 3 + 5)
    cfg = TrainConfig(num_envs=4, num_steps=16, seq_len=8, num_minibatches=2, update_epochs=1, hidden_dim=16,
                      total_steps=4 * 16 * 5, eval_episodes=0, checkpoint_every=2, progress=False, device="cpu",
                      compile_mode="off", run_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingFailed, match=r"the rollout of iteration 3 failed at step 4 of 16 \(env "
                                             r"tests.test_env_failures:RaisingCartPole\): RuntimeError: device env "
                                             r"broke at its step 53") as failed:
        Trainer(cfg, env=RaisingCartPole).train()
    assert (failed.value.iterations, failed.value.checkpoint) == (3, tmp_path / "run" / "checkpoint.pt")
    state = read_checkpoint(tmp_path / "run")
    assert state["iteration"] == 3 and not {"rng", "env", "carry"} & set(state)

    monkeypatch.setattr(RaisingCartPole, "raise_at", 0)
    saved = TrainConfig(**state["config"])
    assert saved.env == "tests.test_env_failures:RaisingCartPole", "the class, named by its import path"
    resumed = Trainer(saved)
    resumed.restore(state)
    assert not resumed.resumed_exactly and "fresh episodes" in resumed.resume_note()
    assert resumed.train()["global_step"] == 4 * 16 * 5
    assert iterations_logged(tmp_path / "run") == [0, 1, 2, 3, 4]
