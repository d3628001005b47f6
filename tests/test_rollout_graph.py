"""The whole rollout as one CUDA graph: refused where it cannot work; on a GPU, replays that record what the
policy did, rollout after rollout."""

import pytest
import torch

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.models.policy import RecurrentPolicy
from recurrent_ppo.rollout import RolloutCollector, RolloutSettings
from recurrent_ppo.trainer import Trainer


def collector_on(device: str, env_name: str = "stateless-cartpole", num_envs: int = 8, num_steps: int = 16,
                 compile_mode: str = "default") -> RolloutCollector:
    env = make_env(env_name, num_envs, torch.device(device))
    policy = RecurrentPolicy(env.observation_space, env.action_space, hidden_dim=16).to(device)
    buffer = RolloutBuffer.for_policy(policy, num_envs, num_steps, torch.device(device))
    return RolloutCollector(policy, env, buffer, EpisodeTracker(num_envs, torch.device(device)),
                            RolloutSettings(rollout_graph=True), compile_mode=compile_mode)


def test_refused_off_cuda():
    with pytest.raises(ValueError, match="rollout_graph .* needs a CUDA device, not cpu"):
        collector_on("cpu")


def test_refused_by_the_config_off_cuda(tmp_path):
    cfg = TrainConfig(device="cpu", rollout_graph=True, run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="rollout_graph needs a CUDA device"):
        cfg.validate()


@pytest.mark.gpu
def test_refused_for_host_envs_and_eager_steps():
    pytest.importorskip("gymnasium")
    with pytest.raises(ValueError, match="steps on the host"):
        collector_on("cuda", "gym:CartPole-v1")
    with pytest.raises(ValueError, match="compile mode other than off"):
        collector_on("cuda", compile_mode="off")


@pytest.mark.gpu
@pytest.mark.parametrize("env_name", ["stateless-cartpole", "masked-choice", "stateless-pendulum"])
def test_replayed_rollouts_record_what_the_policy_did(env_name):
    torch.manual_seed(0)
    collector = collector_on("cuda", env_name)
    buffer, policy = collector.buffer, collector.policy
    seen = []
    for rollout in range(4):
        collector.collect()
        torch.cuda.synchronize()
        assert collector.captured_rollout is not None, "captured at the end of the first rollout"
        assert buffer.full and int(buffer.step_index) == buffer.num_steps, rollout
        seen.append(buffer.log_probs.clone())
        with torch.no_grad():
            obs, hidden = buffer.obs, tuple(part[:, 0].transpose(0, 1).contiguous() for part in buffer.hidden)
            out = policy.evaluate_actions(obs, hidden, buffer.episode_starts, buffer.actions)
        # What a replay stored is what the policy computes for the stored steps from the stored start state.
        torch.testing.assert_close(out.log_prob, buffer.log_probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.value, buffer.values, rtol=1e-5, atol=1e-5)
    for earlier, later in zip(seen, seen[1:]):
        assert not torch.equal(earlier, later), "each replay is a new rollout, not the captured one again"
    assert int(collector.episodes.finished) > 0, "episodes ended inside the replays and were counted"


@pytest.mark.gpu
def test_training_with_the_rollout_graph(tmp_path):
    cfg = TrainConfig(num_envs=64, num_steps=32, seq_len=8, hidden_dim=32, total_steps=64 * 32 * 4,
                      eval_episodes=0, progress=False, device="cuda", rollout_graph=True, run_dir=str(tmp_path / "r"))
    trainer = Trainer(cfg)
    summary = trainer.train()
    assert trainer.collector.captured_rollout is not None
    assert summary["global_step"] == cfg.total_steps
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())
