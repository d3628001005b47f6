"""Trainer: truncation bootstrap, logs, checkpoints, evaluation; and end-to-end learning on CartPole."""

import json

import pytest
import torch

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import load_policy, save_checkpoint
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import CartPole
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.models import RecurrentPolicy
from recurrent_ppo.rollout import RolloutCollector
from recurrent_ppo.spaces import Box, Discrete
from recurrent_ppo.trainer import Trainer
from tests.helpers import assert_close


def small_config(tmp_path, **changes):
    base = TrainConfig(num_envs=4, num_steps=16, seq_len=4, total_steps=4 * 16 * 2, hidden_dim=8,
                       num_minibatches=2, update_epochs=2, eval_episodes=3, progress=False,
                       run_dir=str(tmp_path / "run"), device="cpu", compile_mode="off")
    return base.replace(**changes)


@pytest.mark.parametrize("rows_for", ["the_time_limit", "every_step"])
def test_truncated_values_bootstrap_from_the_state_after_the_step(rows_for):
    policy = RecurrentPolicy(Box((2,)), Discrete(2), hidden_dim=8)
    env = CartPole(4, stateless=True, max_episode_steps=5)
    limit = env.max_episode_steps if rows_for == "the_time_limit" else None
    buffer = RolloutBuffer.for_policy(policy, 4, 16, "cpu", max_episode_steps=limit)
    assert buffer.final_rows == (4 * 4 if limit else 4 * 16), "at most ceil(16 / 5) truncations per env"
    collector = RolloutCollector(policy, env, buffer, EpisodeTracker(4, torch.device("cpu")))
    buffer.truncated_values.fill_(float("nan"))
    collector.collect()
    collector.check()
    truncated = buffer.truncated.nonzero().tolist()
    assert len(truncated) >= 8, "a 5-step limit truncates every env several times in 16 steps"
    assert int(buffer.final_count) == len(truncated)
    kept = {(int(e), int(t)): row for row, (e, t) in enumerate(zip(buffer.final_env, buffer.final_step))
            if row < len(truncated)}
    assert sorted(kept) == sorted(map(tuple, truncated)), "each truncation's final observation is kept once"
    for env_id, t in truncated:
        rows, steps = slice(env_id, env_id + 1), slice(t, t + 1)
        final_obs = buffer.final_obs[kept[env_id, t]][None]
        assert final_obs.abs().max() > 0, "a final observation was stored"
        h0 = (buffer.hidden_h[rows, t].transpose(0, 1), buffer.hidden_c[rows, t].transpose(0, 1))
        with torch.no_grad():
            after = policy.evaluate_actions(buffer.obs[rows, steps], h0, buffer.episode_starts[rows, steps],
                                            buffer.actions[rows, steps]).hidden
            expected = policy.get_value(final_obs, after, torch.zeros(1, dtype=torch.bool))
            from_reset = policy.get_value(final_obs, after, torch.ones(1, dtype=torch.bool))
        assert_close(buffer.truncated_values[env_id, steps], expected, f"truncated value of env {env_id} at step {t}")
        assert not torch.allclose(expected, from_reset), "the recurrent state must matter for this check"
        if t + 1 < buffer.num_steps:
            assert buffer.episode_starts[env_id, t + 1], "the step after a truncation starts an episode"


def test_more_truncations_than_the_limit_allows_fail_loudly():
    env = CartPole(4, stateless=True, max_episode_steps=3)
    policy = RecurrentPolicy(Box((2,)), Discrete(2), hidden_dim=8)
    collector = RolloutCollector(policy, env, RolloutBuffer.for_policy(policy, 4, 16, "cpu", max_episode_steps=3),
                                 EpisodeTracker(4, torch.device("cpu")))
    collector.collect()
    collector.check()  # within the bound: silent
    # An env that truncates more often than the max_episode_steps it declares:
    liar = RolloutCollector(policy, env, RolloutBuffer.for_policy(policy, 4, 16, "cpu", max_episode_steps=16),
                            EpisodeTracker(4, torch.device("cpu")))
    liar.collect()
    with pytest.raises(RuntimeError, match="truncated more than 4 episodes in a rollout"):
        liar.check()


def test_train_writes_metrics_checkpoint_and_evaluates(tmp_path):
    cfg = small_config(tmp_path)
    summary = Trainer(cfg).train()
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [64, 128]
    for row in rows:
        for key in ("global_step", "episode_return_mean", "sps", "loss", "approx_kl", "learning_rate"):
            assert key in row, key
        assert row["sps"] > 0
    assert rows[1]["learning_rate"] == pytest.approx(cfg.learning_rate / 2), "annealed linearly"
    assert 1 <= summary["eval_return_mean"] <= 500
    policy = load_policy(run / "checkpoint.pt")
    assert policy.hidden_dim == 8
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["global_step"] == 128 and saved["config"]["num_envs"] == 4
    assert json.loads((run / "summary.json").read_text())["global_step"] == 128


def test_annealed_learning_rate_reaches_the_optimizer(tmp_path):
    trainer = Trainer(small_config(tmp_path, total_steps=4 * 16 * 4))
    trainer.train_iteration(2)
    assert trainer.optimizer.param_groups[0]["lr"] is trainer.lr
    assert float(trainer.lr) == pytest.approx(trainer.cfg.learning_rate * 0.5)


def test_matmul_precision_is_set_for_the_run(tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        Trainer(small_config(tmp_path, precision="tf32"))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}, "the old checkpoint survives a failed write"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"], "no temporary file is left behind"


@pytest.mark.slow(seconds=20)
def test_learns_stateless_cartpole_with_memory(tmp_path):
    # Eager: the compiled iteration is twice as fast here, but a cold compile costs more than that saves at this
    # budget; what compiling changes is tests/test_compile.py's (the same graphs, no recompiles).
    cfg = TrainConfig(env="stateless-cartpole", total_steps=122_880, eval_episodes=20, progress=False,
                      run_dir=str(tmp_path / "run"), device="cpu", compile_mode="off")
    summary = Trainer(cfg).train()
    # Without velocities a memoryless policy stays far below this; the LSTM must infer them. Eager, one thread,
    # seeds 1-3 evaluated at 500, 500, 500 (20 episodes; last-100 training returns 364, 374, 365).
    assert summary["episode_return_mean"] >= 300, summary
    assert summary["eval_return_mean"] >= 400, summary


def test_crashed_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, capsys):
    from recurrent_ppo.cli import main

    cfg = small_config(tmp_path, total_steps=4 * 16 * 4, checkpoint_every=1, eval_episodes=0)
    trainer = Trainer(cfg)
    train_iteration = trainer.train_iteration

    def crash_at_2(iteration):
        if iteration == 2:
            raise KeyboardInterrupt  # killed mid-run
        return train_iteration(iteration)

    monkeypatch.setattr(trainer, "train_iteration", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    run = tmp_path / "run"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (saved["iteration"], saved["global_step"]) == (2, 128), "checkpointed after each iteration"
    assert torch.equal(saved["policy"]["head.linear.weight"], trainer.policy.state_dict()["head.linear.weight"])

    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "resuming after iteration 2" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [64, 128, 192, 256], "one log, continued"
    assert rows[2]["learning_rate"] == pytest.approx(cfg.learning_rate * 0.5), "the schedule went on"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (saved["iteration"], saved["global_step"]) == (4, 256)

    # Finished: only a larger total_steps continues it; what the run trains cannot change.
    assert main(["train", "--resume", str(run)]) == 2
    assert "already trained 256 of total_steps=256" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--num-envs", "8"]) == 2
    assert "--num-envs cannot change when resuming (the run has num_envs=4)" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--total-steps", str(4 * 16 * 5), "--no-progress"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["global_step"] == 320


def test_restored_optimizer_follows_the_annealed_learning_rate(tmp_path):
    first = Trainer(small_config(tmp_path, total_steps=4 * 16 * 4))
    first.train_iteration(0)
    state = {"policy": first.policy.state_dict(), "policy_spec": first.policy_spec, "global_step": 64,
             "optimizer": first.optimizer.state_dict(), "iteration": 1}
    second = Trainer(small_config(tmp_path, total_steps=4 * 16 * 4))
    second.restore(state)
    second.train_iteration(2)
    assert second.optimizer.param_groups[0]["lr"] is second.lr
    assert float(second.lr) == pytest.approx(second.cfg.learning_rate * 0.5)


@pytest.mark.parametrize("env,core,skip_core", [("gym:Taxi-v4", "gru", False), ("gym:Pendulum-v1", "lstm", True)],
                         ids=["masked-discrete-gru", "box-actions-lstm-skip"])
def test_the_checkpoint_rebuilds_any_policy_for_eval_and_resume(tmp_path, capsys, env, core, skip_core):
    from recurrent_ppo.cli import main

    pytest.importorskip("gymnasium")
    run = tmp_path / "run"
    trainer = Trainer(small_config(tmp_path, env=env, core=core, skip_core=skip_core, eval_episodes=0))
    trainer.train()
    policy = load_policy(run)
    assert policy.spec() == trainer.policy.spec() and (policy.core_kind, policy.skip_core) == (core, skip_core)
    assert policy.obs_space == trainer.policy.obs_space and policy.action_space == trainer.policy.action_space
    for name, value in trainer.policy.state_dict().items():
        assert torch.equal(policy.state_dict()[name], value), name
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--num-envs", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith(f"{env}: deterministic evaluation over 2 episodes on cpu")
    assert main(["train", "--resume", str(run), "--total-steps", str(4 * 16 * 3), "--no-progress"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["global_step"] == 4 * 16 * 3


def test_a_first_format_checkpoint_loads_as_its_policy_spec(tmp_path):
    """Checkpoints of the first format (policy_args, actor.*/lstm.* names) still load."""
    policy = RecurrentPolicy(Box((2,)), Discrete(3), hidden_dim=8)
    old_names = {"head.linear.": "actor.", "core.": "lstm."}
    first_format_state = {next((new + k[len(old):] for old, new in old_names.items() if k.startswith(old)), k): v
                          for k, v in policy.state_dict().items()}
    assert "actor.weight" in first_format_state and "lstm.weight_hh_l0" in first_format_state
    save_checkpoint(tmp_path / "checkpoint.pt", {
        "policy": first_format_state, "config": {}, "global_step": 0,
        "policy_args": {"obs_dim": 2, "num_actions": 3, "hidden_dim": 8, "num_layers": 1}})
    loaded = load_policy(tmp_path)
    assert loaded.spec() == policy.spec()
    for name, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_checkpoint_from_before_skip_core_or_recall_loads_without_them(tmp_path, fmt):
    """Format 2 specs have neither "skip_core" nor "recall", format 3 no "recall": they load as policies without the
    skip or the recall head, and resume as such."""
    policy = RecurrentPolicy(Box((2,)), Discrete(3), hidden_dim=8)
    added = {2: ("skip_core", "recall"), 3: ("recall",)}[fmt]
    spec = {key: value for key, value in policy.spec().items() if key not in added}
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": fmt, "policy": policy.state_dict(), "policy_spec": spec,
                                                 "config": {}, "global_step": 0})
    assert load_policy(tmp_path).spec() == {**spec, "skip_core": False, "recall": False}


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
