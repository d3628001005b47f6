"""Gymnasium envs stepped in worker processes (--env-workers), the rollout overlapped with them (--env-overlap):
the same rollout as in-process, bit for bit; a worker that dies or raises named; resume; the auto rule."""

import json
import re

import pytest
import torch

from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig, config_from_dict
from recurrent_ppo.envs import GymVectorEnv
from recurrent_ppo.envs.host_workers import available_cores, choose_workers
from recurrent_ppo.trainer import Trainer

gym = pytest.importorskip("gymnasium")

TINY = ["--num-envs", "4", "--num-steps", "16", "--seq-len", "8", "--num-minibatches", "2", "--update-epochs", "1",
        "--hidden-dim", "16", "--eval-episodes", "0", "--device", "cpu", "--compile-mode", "off", "--no-progress"]
BUFFER_FIELDS = ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated", "truncated_values",
                 "episode_starts", "hidden_h", "hidden_c", "advantages")


def two_rollouts(tmp_path, name: str, **workers) -> list[dict[str, torch.Tensor]]:
    """The buffer (and the carry after it) of two training iterations of CartPole cut at 10 steps, 8 envs."""
    cfg = TrainConfig(env="gym:tests.gym_envs:short_cartpole", num_envs=8, num_steps=16, seq_len=8, hidden_dim=16,
                      num_minibatches=2, update_epochs=1, total_steps=8 * 16 * 2, eval_episodes=0, progress=False,
                      device="cpu", compile_mode="off", run_dir=str(tmp_path / name), **workers)
    trainer = Trainer(cfg)
    stored = []
    for iteration in range(2):
        trainer.train_iteration(iteration)
        collector = trainer.collector
        stored.append({**{field: getattr(trainer.buffer, field).clone() for field in BUFFER_FIELDS},
                       "carry_obs": collector.obs.clone(), "carry_h": collector.hidden[0].clone(),
                       "carry_c": collector.hidden[1].clone(), "carry_starts": collector.episode_starts.clone()})
    trainer.close()
    return stored


def test_the_rollout_in_workers_overlapped_or_not_stores_what_the_in_process_one_stores_bitwise(tmp_path):
    """Halves of 4 envs: the CPU's GEMMs give each row the same bits at 4 rows as at 8, and the categorical draws
    its noise in sequence, so the overlapped rollout (each half acting while the other steps) must store exactly
    the in-process one: observations, actions, log-probs, values, states, bootstraps, advantages, and the carry."""
    expected = two_rollouts(tmp_path, "in-process")
    assert expected[0]["terminated"].any() and expected[0]["truncated"].any(), "episodes should end both ways"
    for name, workers in {"workers": dict(env_workers=2, env_overlap=False),
                          "overlapped": dict(env_workers=2, env_overlap=True)}.items():
        got = two_rollouts(tmp_path, name, **workers)
        for iteration, (want, have) in enumerate(zip(expected, got)):
            differ = [field for field in want if not torch.equal(want[field], have[field])]
            assert not differ, f"{name}, iteration {iteration}: {differ} differ from the in-process rollout"


def test_a_killed_env_worker_stops_the_run_naming_it_and_resume_goes_on_in_workers(tmp_path, capsys):
    """Each copy kills its worker at its 40th step (iteration 2, rollout step 7 at 16 steps per iteration): exit 1
    and one line naming the worker, how it ended and the copies it held; the two completed iterations are
    checkpointed; the resume (with another worker count: a setting that changes how, not what, the run trains)
    finishes the run with fresh copies, which take 32 steps, not 40."""
    from tests.gym_envs import register_dying

    env = f"gym:{register_dying('DiesAt40', at=40)}"
    run = tmp_path / "run"
    assert main(["train", "--env", env, *TINY, "--total-steps", str(4 * 16 * 4), "--run-dir", str(run),
                 "--env-workers", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(rf"the rollout of iteration 2 failed at step 7 of 16 \(env {re.escape(env)}\): EnvWorkerDied: "
                     rf"{re.escape(env)}: env worker 0 of 2 \(pid \d+\), which held env copies 0 and 2, was killed by "
                     rf"SIGKILL; .*the checkpoint of the 2 completed iterations is kept: {re.escape(str(run))}",
                     err), err
    assert json.loads((run / "config.json").read_text())["resolved_env_workers"] == 2

    assert main(["train", "--resume", str(run), "--env-workers", "1"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "resuming after iteration 2 with fresh episodes" in out and "step in 1 worker processes" in out, out
    assert [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def test_an_env_raising_in_a_worker_raises_its_own_error_with_the_worker_traceback_chained():
    from recurrent_ppo.envs.host_workers import WorkerTraceback
    from tests.gym_envs import register_breaking

    env = GymVectorEnv(register_breaking("RaisesAt3", at=3), 2, workers=2)
    env.reset()
    actions = torch.zeros(2, dtype=torch.int64)
    env.step(actions)
    env.step(actions)
    with pytest.raises(RuntimeError, match="the simulator crashed at its step 3") as raised:
        env.step(actions)
    assert isinstance(raised.value.__cause__, WorkerTraceback) and "in step" in str(raised.value.__cause__)
    with pytest.raises(RuntimeError, match="cannot go on after an earlier failure"):
        env.step(actions)
    env.close()


def test_auto_steps_a_cheap_env_in_process_and_a_slow_one_in_workers():
    """The rule: workers only where they save more of each step than WORKER_PAYOFF pipe round trips (per part)."""
    cheap = GymVectorEnv("CartPole-v1", 8, workers="auto")
    assert cheap.workers == 0 and cheap.workers_note.startswith("in-process"), cheap.workers_note
    from tests.gym_envs import SlowCartPole

    slow = GymVectorEnv(SlowCartPole, 8, workers="auto")  # 2 ms a step
    cores = available_cores()
    assert slow.workers == (min(cores, 8) if cores > 1 else 0), slow.workers_note
    slow.close()
    assert choose_workers(32, 1e-3, cores=2, round_trip=1e-4)[0] == 2
    assert choose_workers(32, 5e-6, cores=2, round_trip=1e-4)[0] == 0
    assert choose_workers(32, 1e-3, cores=1, round_trip=1e-4)[0] == 0
    assert choose_workers(3, 1e-3, cores=8, round_trip=1e-4)[0] == 3


def test_env_workers_is_typed_and_only_for_gymnasium_envs(tmp_path):
    assert TrainConfig(env="gym:CartPole-v1", env_workers=2).validate().env_workers == 2
    assert TrainConfig(env="cartpole", env_workers="auto").validate().env_workers == "auto"
    with pytest.raises(ValueError, match=r"env_workers=2 steps a gymnasium env's copies in worker processes, and "
                                         r"env='cartpole' is not one \(gym:<id>\)"):
        TrainConfig(env="cartpole", env_workers=2).validate()
    with pytest.raises(ValueError, match=r"env_workers=-1 must be 0 \(in-process\), a number of worker processes, "
                                         r"or 'auto'"):
        TrainConfig(env="gym:CartPole-v1", env_workers=-1).validate()
    with pytest.raises(ValueError, match=r"env_workers must be an int or one of 'auto', got the str '2'"):
        config_from_dict({"env_workers": "2"}, "test")
    assert config_from_dict({"env_workers": "auto", "env_overlap": False}, "test").env_workers == "auto"
    assert main(["train", "--env", "cartpole", "--env-workers", "2", "--run-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.slow(seconds=12)
def test_learns_gym_cartpole_with_its_copies_in_workers(tmp_path):
    from recurrent_ppo.config import PRESETS

    # 30% of the preset's budget: seeds 1-3 evaluated at 500, 500, 500 (20 episodes) after it, on one thread (a
    # random policy averages about 22); the overlapped rollout is the in-process one, bit for bit, on the CPU, so
    # in-process runs learn the same.
    cfg = PRESETS["gym-cartpole"].replace(env_workers=2, total_steps=61_440, eval_episodes=20, progress=False,
                                          device="cpu", compile_mode="off", run_dir=str(tmp_path / "run"))
    trainer = Trainer(cfg)
    summary = trainer.train()
    trainer.close()
    assert summary["eval_return_mean"] >= 400, summary
