"""Device CartPole against gymnasium's CartPole-v1, auto-reset, truncation and the stateless view."""

import pytest
import torch

from recurrent_ppo.envs import CartPole, make_env
from tests.helpers import assert_close


def test_dynamics_match_gymnasium():
    gym = pytest.importorskip("gymnasium")
    np = pytest.importorskip("numpy")
    num_envs, steps = 8, 40
    env = CartPole(num_envs)
    env.reset()
    refs = [gym.make("CartPole-v1").unwrapped for _ in range(num_envs)]
    for i, ref in enumerate(refs):
        ref.reset(seed=i)
        ref.state = env.state[i].double().numpy().copy()
    actions = torch.randint(0, 2, (steps, num_envs))
    alive = torch.ones(num_envs, dtype=torch.bool)
    for t in range(steps):
        result = env.step(actions[t])
        for i, ref in enumerate(refs):
            if not alive[i]:
                continue
            obs, reward, terminated, truncated, _ = ref.step(int(actions[t, i]))
            assert_close(result.final_obs[i], torch.from_numpy(np.asarray(obs, dtype=np.float32)),
                         f"env {i} obs at step {t}", rtol=1e-4, atol=1e-5)
            assert bool(result.terminated[i]) == terminated, f"env {i} terminated at step {t}"
            assert float(result.reward[i]) == reward
            if terminated:
                alive[i] = False
    assert not alive.all(), "random actions should end some episodes within 40 steps"


def test_terminated_envs_reset_and_report_final_obs():
    env = CartPole(3)
    env.reset()
    env.state[1] = torch.tensor([2.39, 1.0, 0.0, 0.0])  # one step from leaving the track
    result = env.step(torch.ones(3, dtype=torch.long))
    assert result.terminated.tolist() == [False, True, False]
    assert not result.truncated.any()
    assert result.final_obs[1, 0] > 2.4, "final_obs is the state that ended the episode"
    assert result.obs[1].abs().max() <= 0.05, "the next obs of a finished env is a fresh reset state"
    assert torch.equal(result.obs[[0, 2]], result.final_obs[[0, 2]]), "running envs: obs == final_obs"
    assert env.elapsed.tolist() == [1, 0, 1]


def test_time_limit_truncates():
    env = CartPole(2, max_episode_steps=5)
    env.reset()
    for t in range(5):
        env.state.zero_()  # keep the pole up, so only the time limit can end the episode
        result = env.step(torch.tensor([0, 1]))
        assert not result.terminated.any()
        assert result.truncated.all() == (t == 4), f"step {t}"
    assert (env.elapsed == 0).all()


def test_terminal_state_at_the_limit_is_terminated_not_truncated():
    env = CartPole(1, max_episode_steps=1)
    env.reset()
    env.state[0] = torch.tensor([2.39, 1.0, 0.0, 0.0])
    result = env.step(torch.ones(1, dtype=torch.long))
    assert result.terminated.item() and not result.truncated.item()


def test_stateless_observes_position_and_angle_only():
    full, stateless = make_env("cartpole", 4, "cpu"), make_env("stateless-cartpole", 4, "cpu")
    assert (full.observation_space.shape, stateless.observation_space.shape) == ((4,), (2,))
    torch.manual_seed(0)
    full_obs = full.reset()
    torch.manual_seed(0)
    assert torch.equal(stateless.reset(), full_obs[:, [0, 2]])
    actions = torch.tensor([0, 1, 1, 0])
    torch.manual_seed(1)
    full_obs = full.step(actions).obs
    torch.manual_seed(1)
    assert torch.equal(stateless.step(actions).obs, full_obs[:, [0, 2]])


def test_observations_are_copies_not_views_of_the_state():
    env = CartPole(2, stateless=True)
    obs = env.reset()
    before = obs.clone()
    env.step(torch.zeros(2, dtype=torch.long))
    assert torch.equal(obs, before)


def test_unknown_env_is_rejected():
    with pytest.raises(ValueError, match="unknown env 'pong'"):
        make_env("pong", 1, "cpu")


def test_cue_memory_pays_only_the_remembered_cue():
    from recurrent_ppo.envs import CueMemory

    env = CueMemory(64, num_cues=4, delay=3)
    obs = env.reset()
    cue = obs[:, :4].argmax(1)
    assert torch.equal(obs[:, :4].sum(1), torch.ones(64)) and not obs[:, 4].any(), "cue shown, no query yet"
    for step in range(3):  # blanks, then the query; actions before the query change nothing
        result = env.step(torch.randint(0, 4, (64,)))
        assert not result.terminated.any() and torch.equal(result.reward, torch.zeros(64))
        assert torch.equal(result.final_obs, result.obs)
        assert not result.obs[:, :4].any() and bool(result.obs[:, 4].all()) == (step == 2)
    answers = torch.where(torch.arange(64) % 2 == 0, cue, (cue + 1) % 4)  # even envs remember, odd ones do not
    result = env.step(answers)
    assert result.terminated.all() and not result.truncated.any()
    assert torch.equal(result.reward, (torch.arange(64) % 2 == 0).float())
    assert not result.final_obs.any(), "past the query there is nothing to see"
    assert torch.equal(result.obs[:, :4].sum(1), torch.ones(64)) and not result.obs[:, 4].any(), "a new cue"
    assert isinstance(make_env("memory", 2, "cpu"), CueMemory)
