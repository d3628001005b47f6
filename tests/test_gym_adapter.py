"""Gymnasium envs through GymVectorEnv: the StepResult contract, seeding, space checks, and training on one."""

import json

import pytest
import torch

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import GymVectorEnv, make_env
from recurrent_ppo.trainer import Trainer, default_run_dir
from tests.helpers import assert_close

gym = pytest.importorskip("gymnasium")
np = pytest.importorskip("numpy")


def test_steps_match_plain_gymnasium_envs_with_same_step_resets():
    """Env i seeded seed + i steps as a plain CartPole-v1 would; where an episode ends, `final_obs` is its last
    observation and `obs` the first of the next episode (the plain env reset by hand)."""
    num_envs, limit, seed = 3, 6, 11
    env = GymVectorEnv("CartPole-v1", num_envs, seed=seed, max_episode_steps=limit)
    refs = [gym.make("CartPole-v1", max_episode_steps=limit) for _ in range(num_envs)]
    obs = env.reset()
    assert obs.shape == (num_envs, 4) and obs.dtype == torch.float32
    for i, ref in enumerate(refs):
        ref_obs, _ = ref.reset(seed=seed + i)
        assert_close(obs[i], torch.from_numpy(ref_obs), f"env {i} first observation")
    actions = torch.randint(0, 2, (3 * limit, num_envs))
    ends = 0
    for t, step_actions in enumerate(actions):
        result = env.step(step_actions)
        assert result.reward.dtype == torch.float32 and result.terminated.dtype == torch.bool
        for i, ref in enumerate(refs):
            ref_obs, reward, terminated, truncated, _ = ref.step(int(step_actions[i]))
            assert_close(result.final_obs[i], torch.from_numpy(ref_obs), f"env {i} final obs at step {t}")
            assert float(result.reward[i]) == reward
            assert bool(result.terminated[i]) == terminated, f"env {i} terminated at step {t}"
            assert bool(result.truncated[i]) == (truncated and not terminated), f"env {i} truncated at step {t}"
            if terminated or truncated:
                ends += 1
                ref_obs, _ = ref.reset()
            assert_close(result.obs[i], torch.from_numpy(ref_obs), f"env {i} obs at step {t}")
    assert ends >= num_envs * 2, "every env should have ended episodes (the limit is 6 steps)"


def test_spaces_of_the_toy_text_and_classic_control_envs():
    """Discrete observations (FrozenLake), a Tuple (Blackjack), Taxi's info action mask moved into the observation,
    and Box actions (Pendulum), each on the device in its own dtype."""
    from recurrent_ppo.spaces import Box, Dict, Discrete, MultiBinary, Tuple

    lake = GymVectorEnv("FrozenLake-v1", 2)
    assert (lake.observation_space, lake.action_space) == (Discrete(16), Discrete(4))
    assert lake.reset().dtype == torch.int64
    jack = GymVectorEnv("Blackjack-v1", 2)
    assert jack.observation_space == Tuple((Discrete(32), Discrete(11), Discrete(2)))
    assert sorted(jack.reset()) == ["0", "1", "2"]
    taxi = GymVectorEnv("Taxi-v4", 3)
    assert taxi.observation_space == Dict((("obs", Discrete(500)), ("action_mask", MultiBinary((6,)))))
    obs = taxi.reset()
    assert obs["obs"].dtype == torch.int64 and obs["action_mask"].dtype == torch.bool
    assert obs["action_mask"].shape == (3, 6) and obs["action_mask"].any(1).all()
    result = taxi.step(torch.tensor([0, 1, 4]))
    assert result.obs["action_mask"].shape == result.final_obs["action_mask"].shape == (3, 6)
    pendulum = GymVectorEnv("Pendulum-v1", 2)
    assert pendulum.action_space == Box((1,), -2.0, 2.0)
    pendulum.reset()
    assert pendulum.step(torch.tensor([[5.0], [-1.0]])).reward.shape == (2,)


def test_gym_names_are_envs_and_seeded_by_torch():
    torch.manual_seed(3)
    first = make_env("gym:CartPole-v1", 2, "cpu").reset()
    torch.manual_seed(3)
    again = make_env("gym:CartPole-v1", 2, "cpu").reset()
    assert torch.equal(first, again)
    assert TrainConfig(env="gym:CartPole-v1").validate().env == "gym:CartPole-v1"
    with pytest.raises(ValueError, match="env='gym:' is unknown"):
        TrainConfig(env="gym:").validate()


@pytest.mark.parametrize("compile_mode", ["off", "default"])
def test_trainer_runs_compiled_around_a_host_env(tmp_path, compile_mode):
    """Compiled with fullgraph, a graph break would raise: the rollout's parts compile around the host step."""
    cfg = TrainConfig(env="gym:CartPole-v1", num_envs=4, num_steps=16, seq_len=4, total_steps=4 * 16 * 2,
                      hidden_dim=8, num_minibatches=2, update_epochs=1, eval_episodes=4, progress=False,
                      run_dir=str(tmp_path / "run"), device="cpu", compile_mode=compile_mode,
                      compile_backend="aot_eager")
    summary = Trainer(cfg).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows if "global_step" in row][:2] == [64, 128]
    assert 1.0 <= summary["eval_return_mean"] <= 500.0


def test_default_run_dir_of_a_gym_env_has_no_colon():
    assert default_run_dir(TrainConfig(env="gym:CartPole-v1")).name.startswith("gym-CartPole-v1-s1-")


@pytest.mark.gpu
def test_host_env_under_cuda_graphs(tmp_path):
    """The policy step and the bookkeeping as two CUDA-graphed graphs around a host env step."""
    cfg = TrainConfig(env="gym:CartPole-v1", num_envs=16, num_steps=16, seq_len=4, total_steps=16 * 16 * 3,
                      hidden_dim=16, num_minibatches=2, update_epochs=1, eval_episodes=16, progress=False,
                      run_dir=str(tmp_path / "run"), device="cuda", compile_mode="reduce-overhead")
    summary = Trainer(cfg).train()
    assert summary["global_step"] == 16 * 16 * 3
    assert 1.0 <= summary["eval_return_mean"] <= 500.0
