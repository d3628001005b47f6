"""normalize.py: the running statistics equal gymnasium's NormalizeReward / NormalizeObservation arithmetic, and
observation normalization (normalize_obs) through the rollout, evaluation, checkpoints and `recurrent-ppo eval`:
float Box leaves standardized, the other leaves untouched, evaluation frozen, compiled as eager, the statistics
saved and used."""

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd as GymRunningMeanStd

from recurrent_ppo import rollout
from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import load_obs_normalizer, read_checkpoint
from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.models import RecurrentPolicy
from recurrent_ppo.normalize import BoxNormalizer, RewardNormalizer, RunningMeanStd, normalized_leaves
from recurrent_ppo.rollout import Evaluator, RolloutCollector, RolloutSettings
from recurrent_ppo.snapshot import load_tensors, save_tensors
from recurrent_ppo.spaces import Box, Dict, Discrete, MultiBinary, Tuple, with_action_mask
from recurrent_ppo.trainer import Trainer
from tests.helpers import RandomEnv, assert_close

CPU = torch.device("cpu")
SPACE = with_action_mask(Dict((("x", Box((3,))), ("count", Box((2,), 0, 9, "int64")), ("pick", Discrete(3)),
                               ("flags", MultiBinary((2,))), ("image", Box((4, 4, 3), 0, 255, "uint8")),
                               ("inner", Tuple((Discrete(2), Box((2, 2))))))), Discrete(3))
FLOAT = ("x", "inner/1")
EPS, CLIP = 1e-8, 10.0


class RecordingEnv(RandomEnv):
    """RandomEnv whose float leaves are far from mean 0, std 1 (so normalizing changes them), that keeps what it
    returned (eager only), and truncates env 0 at step `truncate_at`."""

    def __init__(self, num_envs, *, max_episode_steps=None, truncate_at=None, record=True):
        super().__init__(num_envs, SPACE, Discrete(3))
        self.max_episode_steps, self.truncate_at, self.record = max_episode_steps, truncate_at, record
        self.resets, self.results, self.calls = [], [], 0

    def _leaf(self, leaf):
        x = super()._leaf(leaf)
        return x * torch.tensor([4.0, 0.5, 2.0])[: x.shape[-1]] + 3.0 if x.is_floating_point() else x

    def reset(self):
        obs = super().reset()
        if self.record:
            self.resets.append({path: x.clone() for path, x in obs.items()})
        return obs

    def step(self, actions):
        result = super().step(actions)
        if self.truncate_at is not None:  # a Python counter: eager only
            cut = torch.arange(self.num_envs) == 0
            cut &= self.calls == self.truncate_at
            result = result._replace(terminated=result.terminated & ~cut, truncated=cut)
            self.calls += 1
        if self.record:
            self.results.append(result)
        return result


def collector_of(env, num_steps=8, **args):
    policy = RecurrentPolicy(SPACE, Discrete(3), hidden_dim=8, num_layers=1)
    buffer = RolloutBuffer.for_policy(policy, env.num_envs, num_steps, CPU)
    return RolloutCollector(policy, env, buffer, EpisodeTracker(env.num_envs, CPU),
                            RolloutSettings(normalize_obs=True), **args)


def test_only_float_box_leaves_are_normalized():
    assert normalized_leaves(SPACE) == list(FLOAT)
    assert normalized_leaves(Box((2,))) == [""]
    assert normalized_leaves(Dict((("action_mask", Box((3,))), ("y", Box((1,), dtype="float64"))))) == ["y"]


def test_the_rollout_stores_observations_normalized_as_gymnasium_does():
    """The buffer's observations (and the final observation of a truncated episode) are gymnasium's
    NormalizeObservation of the env's, clipped to +-10: the statistics merged from the reset and every step's
    returned observations, the final ones normalized by the step's statistics without an update; every other leaf
    is stored as the env returned it."""
    wrappers = pytest.importorskip("gymnasium.wrappers.utils")
    env = RecordingEnv(3, max_episode_steps=1000, truncate_at=5)  # env 0's final observation of step 5 is kept
    collector = collector_of(env)
    collector.collect()
    buffer, (reset,), results = collector.buffer, env.resets, env.results
    assert len(results) == buffer.num_steps
    for path in FLOAT:
        rms = wrappers.RunningMeanStd(shape=tuple(reset[path].shape[1:]))

        def normalized(x):
            return torch.from_numpy(np.clip((x.double().numpy() - rms.mean) / np.sqrt(rms.var + EPS), -CLIP, CLIP))

        rms.update(reset[path].double().numpy())  # our statistics accumulate in float64
        expected_obs, expected_final = [normalized(reset[path])], []
        for result in results:
            rms.update(result.obs[path].double().numpy())
            expected_obs.append(normalized(result.obs[path]))
            expected_final.append(normalized(result.final_obs[path]))
        stored = torch.stack(expected_obs[:-1], 1).float()
        assert not torch.allclose(stored, torch.stack([reset[path], *(r.obs[path] for r in results[:-1])], 1))
        assert_close(buffer.obs[path], stored, f"stored obs {path}")
        assert_close(buffer.final_obs[path][0], expected_final[5][0].float(), f"stored final obs {path}")
        assert_close(collector.obs[path], expected_obs[-1].float(), f"carried obs {path}")
        stats = collector.obs_norm.norms[FLOAT.index(path)].stats
        assert_close(stats.mean, torch.from_numpy(rms.mean), f"mean {path}")
        assert_close(stats.var, torch.from_numpy(rms.var), f"var {path}")
        assert float(stats.count) == pytest.approx(rms.count, rel=1e-12)
    for path in set(reset) - set(FLOAT):
        raw = torch.stack([reset[path], *(r.obs[path] for r in results[:-1])], 1)
        assert torch.equal(buffer.obs[path], raw), f"{path} must be stored as the env returned it"


def test_the_truncation_bootstrap_values_the_normalized_final_observation():
    """V(final obs) of a truncated episode is the value of its normalized final observation (the test above),
    from the state after its last step, with or without a time limit."""
    for limit in (None, 1000):
        torch.manual_seed(3)
        collector = collector_of(RecordingEnv(3, max_episode_steps=limit, truncate_at=5, record=False))
        collector.collect()
        buffer = collector.buffer
        assert buffer.truncated[0, 5] and int(buffer.truncated.sum()) == 1
        assert (int(buffer.final_count), int(buffer.final_env[0]), int(buffer.final_step[0])) == (1, 0, 5)
        stored = {path: x[:1] for path, x in buffer.final_obs.items()}  # normalized as the test above checks
        with torch.no_grad():
            h0 = tuple(part[:1, 5].transpose(0, 1) for part in buffer.hidden)
            after = collector.policy.evaluate_actions({p: x[:1, 5:6] for p, x in buffer.obs.items()}, h0,
                                                      buffer.episode_starts[:1, 5:6], buffer.actions[:1, 5:6]).hidden
            expected = collector.policy.get_value(stored, after, torch.zeros(1, dtype=torch.bool))
        assert_close(buffer.truncated_values[0, 5:6], expected, f"V(final obs), max_episode_steps={limit}",
                     rtol=1e-5, atol=1e-6)


def test_evaluation_applies_the_statistics_frozen():
    collector = collector_of(RecordingEnv(3, record=False))
    collector.collect()
    norm = collector.obs_norm
    before = save_tensors(norm)
    env = RecordingEnv(3)
    evaluator = Evaluator(collector.policy, env, obs_norm=norm)
    seen, get_action = [], collector.policy.get_action

    def spy(obs, *args, **kwargs):
        seen.append({path: x.clone() for path, x in obs.items()})  # the carry's leaves change in place
        return get_action(obs, *args, **kwargs)

    collector.policy.get_action = spy  # an instance attribute: the eager evaluation step calls it
    evaluator.evaluate(3)
    assert env.results, "evaluation stepped the env"
    for got, raw in zip(seen, [env.resets[0], *(r.obs for r in env.results)]):
        for path in FLOAT:
            assert_close(got[path], norm(raw, update=False)[path], f"evaluated obs {path}")
            assert not torch.allclose(got[path], raw[path])
        for path in set(raw) - set(FLOAT):
            assert torch.equal(got[path], raw[path]), path
    after = save_tensors(norm)
    assert all(torch.equal(after[k], v) for k, v in before.items()), "evaluation must not update the statistics"


@pytest.mark.usefixtures("fresh_dynamo")
def test_the_compiled_rollout_and_evaluation_step_equal_eager():
    """Compiled with fullgraph=True (aot_eager) and not recompiled by the second rollout, the rollout stores,
    and the statistics hold, eager's values bitwise; the evaluation step acts on the same observations as eager. It is compared on one step from the
    same inputs: compiled, the test env's random final observations, which evaluation never reads, are not
    drawn, so its later draws differ from eager's."""
    runs = []
    for mode in ("off", "default"):
        torch.manual_seed(5)
        collector = collector_of(RecordingEnv(3, max_episode_steps=1000, record=False), compile_mode=mode,
                                 compile_backend="aot_eager")
        evaluator = Evaluator(collector.policy, RecordingEnv(3, record=False), obs_norm=collector.obs_norm,
                              compile_mode=mode, compile_backend="aot_eager")
        collector.collect()
        with torch._dynamo.config.patch(error_on_recompile=True):
            collector.collect()
        with torch.inference_mode():
            _, hidden, _, reward = evaluator.step(evaluator.env.reset(), evaluator.hidden, evaluator.episode_starts)
        runs.append((collector.buffer.obs, collector.buffer.final_obs, save_tensors(collector.obs_norm),
                     (*(h.clone() for h in hidden), reward.clone())))
    (obs, final, stats, step), (c_obs, c_final, c_stats, c_step) = runs
    for path in obs:
        assert torch.equal(c_obs[path], obs[path]) and torch.equal(c_final[path], final[path]), path
    assert all(torch.equal(c_stats[k], v) for k, v in stats.items()), "statistics"
    assert all(torch.equal(c, e) for c, e in zip(c_step, step)), "evaluation step"


def test_restart_normalizes_the_fresh_observations():
    collector = collector_of(RecordingEnv(3))
    collector.collect()
    count = float(collector.obs_norm.norms[0].stats.count)
    collector.restart()
    raw = collector.env.resets[-1]
    assert float(collector.obs_norm.norms[0].stats.count) == count + 3, "the reset observations update the statistics"
    assert_close(collector.obs["x"], collector.obs_norm(raw, update=False)["x"], "restarted obs")
    assert torch.equal(collector.obs["pick"], raw["pick"])


def test_an_observation_space_without_a_float_box_is_refused(tmp_path, capsys):
    space = with_action_mask(Dict((("count", Box((2,), 0, 9, "int64")), ("pick", Discrete(3)),
                                   ("image", Box((4, 4, 3), 0, 255, "uint8")))), Discrete(3))
    policy = RecurrentPolicy(space, Discrete(3), hidden_dim=8, num_layers=1)
    with pytest.raises(ValueError, match="has none; turn normalize_obs off for this env"):
        RolloutCollector(policy, RandomEnv(2, space, Discrete(3)), RolloutBuffer.for_policy(policy, 2, 4, CPU),
                         EpisodeTracker(2, CPU), RolloutSettings(normalize_obs=True))
    assert main(["train", "--env", "popgym/RepeatPreviousEasy", "--no-previous-action", "--normalize-obs", "--device", "cpu",
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "observation space Discrete(n=4, start=0) has none; turn normalize_obs off" in err, err


def test_eval_uses_the_checkpoints_statistics_and_resume_keeps_normalize_obs(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    cfg = TrainConfig(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=1,
                      hidden_dim=8, total_steps=4 * 16 * 2, eval_episodes=2, progress=False, device="cpu",
                      compile_mode="off", run_dir=str(run), normalize_obs=True)
    trainer = Trainer(cfg)
    assert trainer.evaluator.obs_norm is trainer.collector.obs_norm, "the trainer evaluates with its statistics"
    trainer.train()
    saved = read_checkpoint(run)["obs_norm"]
    assert all(torch.equal(saved[k], v) for k, v in save_tensors(trainer.collector.obs_norm).items())
    assert float(saved["norms.0.stats.count"]) > 4 * 16 * 2, "every step's observations are in the statistics"

    used = []

    class Recording(Evaluator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            used.append(kwargs.get("obs_norm"))

    monkeypatch.setattr(rollout, "Evaluator", Recording)
    assert main(["eval", str(run), "--episodes", "2", "--device", "cpu"]) == 0
    assert len(used) == 1 and used[0] is not None, "eval must normalize as the run did"
    assert all(torch.equal(save_tensors(used[0])[k], v) for k, v in saved.items()), "with the stored statistics"
    assert load_obs_normalizer(tmp_path / "run") is not None

    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["obs_norm"]
    torch.save(state, tmp_path / "stripped.pt")
    assert main(["eval", str(tmp_path / "stripped.pt"), "--device", "cpu"]) == 2
    assert "holds no observation statistics" in capsys.readouterr().err

    assert main(["train", "--resume", str(run), "--total-steps", str(4 * 16 * 3), "--no-normalize-obs"]) == 2
    assert ("--normalize-obs cannot change when resuming (the run has normalize_obs=True)"
            in capsys.readouterr().err)


# --- the arithmetic against gymnasium's -------------------------------------------------------------------------


def test_running_mean_std_merges_batches_as_gymnasium_does():
    ours, theirs = RunningMeanStd((3,), "cpu"), GymRunningMeanStd(shape=(3,))
    for _ in range(5):
        batch = torch.randn(7, 3, dtype=torch.float64) * 4 + 2
        ours.update(batch)
        theirs.update(batch.numpy())
    assert_close(ours.mean, torch.from_numpy(theirs.mean), "mean")
    assert_close(ours.var, torch.from_numpy(theirs.var), "var")
    assert float(ours.count) == pytest.approx(theirs.count, rel=1e-12)


def test_reward_normalizer_follows_gymnasium_same_step_autoreset():
    """gymnasium's vector NormalizeReward (same-step autoreset), written out in numpy as it reads."""
    num_envs, gamma, eps = 4, 0.9, 1e-8
    ours = RewardNormalizer(num_envs, gamma, "cpu", eps)
    rms, accumulated = GymRunningMeanStd(shape=()), np.zeros(num_envs)
    for _ in range(30):
        reward = torch.randn(num_envs) * 10
        terminated, truncated = torch.rand(num_envs) < 0.2, torch.rand(num_envs) < 0.1
        truncated &= ~terminated
        accumulated = accumulated * gamma * (1 - terminated.numpy()) + reward.numpy()
        rms.update(accumulated)
        accumulated[(terminated | truncated).numpy()] = 0
        expected = reward.numpy() / np.sqrt(rms.var + eps)
        assert_close(ours(reward, terminated, truncated), torch.from_numpy(expected).float(), "scaled reward")
    assert_close(ours.returns, torch.from_numpy(accumulated), "accumulated returns")


def test_box_normalizer_standardizes_and_clips():
    norm = BoxNormalizer((2,), "cpu", clip=3.0)
    for _ in range(50):
        out = norm(torch.randn(64, 2) * torch.tensor([5.0, 0.1]) + torch.tensor([10.0, -1.0]))
    assert out.abs().max() <= 3.0
    assert_close(norm.stats.mean.float(), torch.tensor([10.0, -1.0]), "mean", atol=0.2, rtol=0)
    assert_close(norm.stats.var.sqrt().float(), torch.tensor([5.0, 0.1]), "std", atol=0.2, rtol=0.05)
    frozen = save_tensors(norm)
    assert_close(norm(torch.ones(1, 2), update=False), norm(torch.ones(1, 2), update=False), "no update")
    assert all(torch.equal(frozen[k], v) for k, v in save_tensors(norm).items()), "update=False keeps the statistics"


def test_state_round_trips():
    first = RewardNormalizer(3, 0.99, "cpu")
    first(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([False, True, False]), torch.zeros(3, dtype=torch.bool))
    second = RewardNormalizer(3, 0.99, "cpu")
    load_tensors(second, save_tensors(first), "reward normalizer")
    for key, value in save_tensors(first).items():
        assert torch.equal(save_tensors(second)[key], value), key


def test_the_reward_normalizer_compiles_without_graph_breaks():
    compiled_norm, eager_norm = RewardNormalizer(4, 0.99, "cpu"), RewardNormalizer(4, 0.99, "cpu")
    step = torch.compile(compiled_norm.__call__, fullgraph=True, backend="aot_eager")
    for _ in range(3):
        reward, terminated = torch.randn(4), torch.rand(4) < 0.3
        truncated = ~terminated & (torch.rand(4) < 0.2)
        assert_close(step(reward, terminated, truncated), eager_norm(reward, terminated, truncated), "scaled reward")
    for key, value in save_tensors(eager_norm).items():
        assert_close(save_tensors(compiled_norm)[key], value, key)
