"""Runs a user can trust: exact resume after a kill, clean stops at signals, NaN/Inf caught with the last good
checkpoint kept, no silent overwrite, a readable console in a log file, time budget, target KL, periodic eval."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrent_ppo import envs
from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import CartPole
from recurrent_ppo.finite import NonFiniteError
from recurrent_ppo.trainer import Trainer

TINY = ["--env", "cartpole", "--num-envs", "4", "--num-steps", "16", "--seq-len", "4", "--num-minibatches", "2",
        "--update-epochs", "2", "--hidden-dim", "8", "--device", "cpu", "--eval-episodes", "2"]
TIMING = ("sps", "sps_overall", "time")
"""Record fields that measure the machine, not the run."""


def train_process(run_dir: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "recurrent_ppo", "train", *TINY, "--run-dir", str(run_dir),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, iteration: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        path = run_dir / "checkpoint.pt"
        if path.exists():
            try:
                if read_checkpoint(path)["iteration"] >= iteration:
                    return
            except ValueError:  # caught mid-rename: try again
                pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of iteration {iteration} within {timeout} s")


def run_record(run_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [{key: value for key, value in row.items() if key not in TIMING} for row in rows]
    return rows, read_checkpoint(run_dir)["policy"]


# Compiled through aot_eager: the same graphs as inductor's (Dynamo and AOTAutograd), whose in-place updates of
# the carried state are what a resume depends on, without three cold inductor compiles (one per process).
@pytest.mark.parametrize("mode,options", [("off", ()), ("default", ("--compile-backend", "aot_eager")),
                                          ("off", ("--normalize-obs",))],
                         ids=["eager", "compiled", "eager-normalize-obs"])
def test_a_killed_run_resumes_bitwise_as_the_uninterrupted_one(tmp_path, mode, options):
    flags = ("--compile-mode", mode, "--total-steps", str(4 * 16 * 8), "--checkpoint-every", "3", "--no-progress",
             *options)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = train_process(whole, *flags)
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.communicate()
    proc = train_process(killed, *flags)
    wait_for_checkpoint(proc, killed, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    (rows, weights), (resumed_rows, resumed_weights) = run_record(whole), run_record(killed)
    assert [row["iteration"] for row in resumed_rows] == list(range(8)), "each iteration logged once"
    assert resumed_rows == rows, "metrics after the resume equal the uninterrupted run's"
    for name, tensor in weights.items():
        assert torch.equal(resumed_weights[name], tensor), f"{name} differs after the resume"
    times = [json.loads(line)["time"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert times == sorted(times), "time goes on from the checkpoint"


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_iteration_checkpoints_and_exits_cleanly(tmp_path, sig, code):
    run = tmp_path / "run"
    proc = train_process(run, "--compile-mode", "off", "--total-steps", str(4 * 16 * 2000), "--checkpoint-every",
                         "0", "--log-every", "1")
    while "iter 2/" not in (line := proc.stdout.readline()):
        assert line, f"the run ended early: {proc.communicate()}"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err, err
    assert f"stopped by {sig.name} after iteration" in err and f"--resume {run}" in err, err
    saved = read_checkpoint(run)
    assert 2 <= saved["iteration"] < 2000
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["iteration"] == saved["iteration"] - 1, "the checkpoint holds the last iteration"
    assert not (run / "summary.json").exists()


class NanAfter(CartPole):
    """CartPole whose reward (or observation) turns NaN/Inf from the `after`-th step on."""

    def __init__(self, num_envs, device, *, field, value, after):
        super().__init__(num_envs, device)
        self.field, self.value, self.after = field, value, after
        self.calls = torch.zeros((1,), dtype=torch.int64, device=self.device)

    def step(self, actions):
        result = super().step(actions)
        self.calls += 1
        poisoned = (self.calls >= self.after) & (torch.arange(self.num_envs, device=self.device) == 1)
        if self.field == "reward":
            return result._replace(reward=torch.where(poisoned, self.value, result.reward))
        return result._replace(obs=torch.where(poisoned[:, None], self.value, result.obs))


@pytest.mark.parametrize("field,value,needle", [
    ("reward", float("nan"), "non-finite reward"), ("reward", float("inf"), "non-finite reward"),
    ("observation", float("nan"), "non-finite observation"),
])
def test_a_device_env_going_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, field, value, needle):
    monkeypatch.setitem(envs.ENVS, "nan-cartpole",
                        lambda n, device: NanAfter(n, device, field=field, value=value, after=16 * 3 + 5))
    cfg = TrainConfig(env="nan-cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=2,
                      hidden_dim=8, total_steps=4 * 16 * 6, checkpoint_every=1, eval_episodes=0, progress=False,
                      device="cpu", compile_mode="off", run_dir=str(tmp_path / "run"))
    with pytest.raises(NonFiniteError, match=f"{needle} in iteration 3, at env 1, rollout step 4"):
        Trainer(cfg).train()
    saved = read_checkpoint(tmp_path / "run")
    assert saved["iteration"] == 3, "the checkpoint is the last one before the poisoned iteration"
    assert all(torch.isfinite(t).all() for t in saved["policy"].values())


def non_finite_env(gym, field, value):
    """A gymnasium env whose 7th step returns `value` (NaN or Inf) as its reward or in its observation."""

    class NonFiniteEnv(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.steps = 0
            return np.zeros(2, np.float32), {}

        def step(self, action):
            self.steps += 1
            bad = self.steps == 7
            obs = np.full(2, value if bad and field == "observation" else 0.0, np.float32)
            return obs, value if bad and field == "reward" else 1.0, self.steps >= 20, False, {}

    return NonFiniteEnv


@pytest.mark.parametrize("field,value", [("reward", float("nan")), ("reward", float("inf")),
                                         ("observation", float("nan"))])
def test_a_gymnasium_env_going_non_finite_stops_the_run(tmp_path, capsys, field, value):
    gym = pytest.importorskip("gymnasium")
    env_id = f"NonFinite{field.title()}{'Nan' if value != value else 'Inf'}-v0"
    gym.register(env_id, entry_point=non_finite_env(gym, field, value), disable_env_checker=True)
    assert main(["train", *TINY[2:], "--env", f"gym:{env_id}", "--compile-mode", "off", "--total-steps", "128",
                 "--no-progress", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"non-finite {field} in iteration 0, at env 0, rollout step 6" in err and "Traceback" not in err, err
    assert "no checkpoint was written" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_an_unknown_gymnasium_env_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("gymnasium")
    assert main(["train", "--env", "gym:NoSuchEnv-v0", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "env 'gym:NoSuchEnv-v0' cannot be made" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_the_env_output_check_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setitem(envs.ENVS, "nan-cartpole",
                        lambda n, device: NanAfter(n, device, field="observation", value=float("nan"), after=3))
    cfg = TrainConfig(env="nan-cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=1,
                      hidden_dim=8, total_steps=4 * 16, eval_episodes=0, progress=False, device="cpu",
                      compile_mode="off", run_dir=str(tmp_path / "run"), check_env_outputs=False)
    with pytest.raises(NonFiniteError, match="update of iteration 0 went non-finite"):
        Trainer(cfg).train()  # the loss check stays


def test_an_existing_run_is_refused_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    flags = [*TINY, "--compile-mode", "off", "--total-steps", "64", "--no-progress", "--run-dir", str(run)]
    assert main(["train", *flags]) == 0
    before = (run / "metrics.jsonl").read_text()
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds a run" in err and "--resume" in err and "--overwrite" in err, err
    assert (run / "metrics.jsonl").read_text() == before, "nothing of the old run was touched"
    assert main(["train", *flags, "--overwrite"]) == 0


def test_the_console_prints_lines_to_a_log_file(tmp_path):
    proc = train_process(tmp_path / "run", "--compile-mode", "default", "--compile-backend", "aot_eager",
                         "--total-steps", str(4 * 16 * 3), "--log-every", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("compiling the rollout step and the update") for line in lines), out
    assert any(line.startswith("first iteration, compilation included: ") for line in lines), out
    progress = [line for line in lines if line.startswith("iter ")]
    assert [line.split()[1] for line in progress] == ["1/3", "2/3", "3/3"], out
    assert all("steps " in line and "sps " in line and "kl " in line for line in progress)


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    cfg = TrainConfig(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=1,
                      hidden_dim=8, total_steps=4 * 16 * 10_000, eval_episodes=2, progress=False, device="cpu",
                      compile_mode="off", run_dir=str(tmp_path / "run"), time_budget=1.0, checkpoint_every=0)
    summary = Trainer(cfg).train()
    assert summary["stopped"] == "time budget" and "eval_return_mean" not in summary
    saved = read_checkpoint(tmp_path / "run")
    assert saved["iteration"] * 64 == summary["global_step"] < cfg.total_steps


def test_target_kl_stops_the_updates_on_the_device(tmp_path):
    base = dict(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=4, update_epochs=4,
                hidden_dim=8, total_steps=4 * 16 * 2, eval_episodes=0, progress=False, device="cpu",
                compile_mode="off", learning_rate=0.05)
    free = Trainer(TrainConfig(**base, run_dir=str(tmp_path / "a")))
    stopped = Trainer(TrainConfig(**base, run_dir=str(tmp_path / "b"), target_kl=1e-9))
    metrics = [trainer.train_iteration(0) for trainer in (free, stopped)]
    assert metrics[0]["kl_stopped"] == 0.0
    assert 0.0 < metrics[1]["kl_stopped"] <= 1.0, "a tiny target stops within the first epoch"
    assert float(stopped.lr) == pytest.approx(0.05), "the learning rate is restored for the next iteration"


def test_eval_every_logs_deterministic_evaluations(tmp_path):
    cfg = TrainConfig(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=1,
                      hidden_dim=8, total_steps=4 * 16 * 4, eval_episodes=2, eval_every=2, progress=False,
                      device="cpu", compile_mode="off", run_dir=str(tmp_path / "run"))
    Trainer(cfg).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert ["eval_return_mean" in row for row in rows] == [False, True, False, True]
    assert all(row["eval_return_mean"] >= 1 for row in rows if "eval_return_mean" in row)
