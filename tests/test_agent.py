"""load_agent: a trained run acting in a plain loop gives the returns evaluation gives, on observations as the env
gives them (device envs, gymnasium envs with an info mask or a Tuple observation), one env or a batch."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from recurrent_ppo import load_agent
from recurrent_ppo.checkpoint import load_obs_normalizer, load_policy
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import GymVectorEnv, PreviousAction, make_env
from recurrent_ppo.rollout import Evaluator
from recurrent_ppo.snapshot import save_tensors
from recurrent_ppo.trainer import Trainer

NUM_ENVS = 4


def train_tiny(run_dir, env: str, **changes) -> str:
    """A run of two iterations, eager, written to `run_dir`."""
    cfg = TrainConfig(env=env, num_envs=NUM_ENVS, num_steps=16, seq_len=8, total_steps=NUM_ENVS * 16 * 2,
                      hidden_dim=16, num_minibatches=2, update_epochs=1, eval_episodes=0, progress=False,
                      device="cpu", compile_mode="off", run_dir=str(run_dir), **changes)
    Trainer(cfg).train()
    return str(run_dir)


@pytest.fixture(scope="module")
def masked_choice_run(tmp_path_factory):
    """A device env with a Dict observation holding its own action mask, MultiDiscrete actions, normalized
    observations and the previous action."""
    return train_tiny(tmp_path_factory.mktemp("agent") / "masked-choice", "masked-choice", normalize_obs=True,
                      previous_action=True)


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    """Continuous actions, whose previous action is a float observation the normalizer standardizes."""
    return train_tiny(tmp_path_factory.mktemp("agent") / "pendulum", "stateless-pendulum", normalize_obs=True,
                      previous_action=True)


@pytest.fixture(scope="module")
def taxi_run(tmp_path_factory):
    """A gymnasium env whose action mask comes in the info, with the previous action."""
    return train_tiny(tmp_path_factory.mktemp("agent") / "taxi", "gym:Taxi-v4", previous_action=True)


@pytest.fixture(scope="module")
def blackjack_run(tmp_path_factory):
    """A gymnasium env with a Tuple observation."""
    return train_tiny(tmp_path_factory.mktemp("agent") / "blackjack", "gym:Blackjack-v1")


class ActionRecorder:
    """`env`, recording the actions it is stepped with."""

    def __init__(self, env) -> None:
        self.env, self.actions = env, []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, actions):
        self.actions.append(actions.clone())
        return self.env.step(actions)


def evaluate(run: str, env, episodes: int, seed: int = 0) -> tuple[list[float], list[torch.Tensor]]:
    """What `recurrent-ppo eval` computes, the Evaluator over the run's env (wrapped as the run was), its episodes
    drawn after `torch.manual_seed(seed)`: the returns, and the actions of every step."""
    recorder = ActionRecorder(env)
    env = PreviousAction(recorder) if load_policy_config(run)["previous_action"] else recorder
    evaluator = Evaluator(load_policy(run), env, obs_norm=load_obs_normalizer(run))
    torch.manual_seed(seed)
    return evaluator.episode_returns(episodes).tolist(), recorder.actions


def load_policy_config(run: str) -> dict:
    from recurrent_ppo.checkpoint import read_checkpoint

    return read_checkpoint(run)["config"]


def device_env_loop(agent, env, seed: int, steps: int, *,
                    one_by_one: bool = False) -> tuple[list[float], list[torch.Tensor]]:
    """`steps` steps of the device env `env` under `agent` in a plain loop, its episodes drawn after
    `torch.manual_seed(seed)`: the return of each env's first episode, and the actions of every step.
    `one_by_one` acts on each env's observation alone, with a state per env."""
    torch.manual_seed(seed)
    obs, states, starts = env.reset(), [None] * env.num_envs, None
    returns = torch.zeros(env.num_envs)
    finished = torch.zeros(env.num_envs, dtype=torch.bool)
    actions = []
    for _ in range(steps):
        if one_by_one:
            rows = [agent.act({k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i], states[i],
                              None if starts is None else starts[i]) for i in range(env.num_envs)]
            action, states = torch.stack([row[0] for row in rows]), [row[1] for row in rows]
        else:
            action, states[0] = agent.act(obs, states[0], starts)
        actions.append(action)
        result = env.step(action)
        returns += result.reward * ~finished
        starts = result.terminated | result.truncated
        finished |= starts
        obs = result.obs
    assert finished.all(), "every env ended its first episode"
    return returns.tolist(), actions


@pytest.mark.parametrize("run_name", ["masked_choice_run", "pendulum_run"])
def test_an_agent_in_a_plain_loop_acts_as_evaluation_does_on_a_device_env(run_name, request):
    run = request.getfixturevalue(run_name)
    env_name = load_policy_config(run)["env"]
    agent = load_agent(run)
    expected, evaluated_actions = evaluate(run, make_env(env_name, NUM_ENVS, "cpu"), NUM_ENVS, seed=3)
    # The raw env: the agent adds the previous action itself; the env's draws come from torch's generator. The
    # evaluation steps on past the first episodes (to a multiple of 64 steps), and so does the loop: episode starts
    # after the first one's reset the carried state.
    steps = len(evaluated_actions)
    returns, actions = device_env_loop(agent, make_env(env_name, NUM_ENVS, "cpu"), 3, steps)
    assert returns == expected
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(actions, evaluated_actions, strict=True))
    returns, actions = device_env_loop(agent, make_env(env_name, NUM_ENVS, "cpu"), 3, steps, one_by_one=True)
    assert returns == pytest.approx(expected, abs=1e-4), "one env's observation at a time acts as the batch does"
    assert all(torch.allclose(ours, theirs, atol=1e-5) for ours, theirs in zip(actions, evaluated_actions,
                                                                               strict=True))


def test_an_env_wrapped_with_the_previous_action_acts_as_the_raw_env(masked_choice_run):
    agent = load_agent(masked_choice_run)
    raw = device_env_loop(agent, make_env("masked-choice", NUM_ENVS, "cpu"), 4, 20)
    wrapped = device_env_loop(agent, make_env("masked-choice", NUM_ENVS, "cpu", previous_action=True), 4, 20)
    assert raw[0] == wrapped[0] and all(torch.equal(a, b) for a, b in zip(raw[1], wrapped[1]))


def gym_loop(agent, env_id: str, seed: int, num_envs: int, steps: int) -> tuple[list[float], list[list[int]]]:
    """`steps` steps of env i, seeded seed + i as a gymnasium vector env seeds it, in a plain gymnasium loop that
    resets it when an episode ends: each env's first return, and its actions."""
    returns, actions = [], []
    for i in range(num_envs):
        env = gym.make(env_id)
        obs, info = env.reset(seed=seed + i)
        state, start, total, taken = None, True, None, []
        running = 0.0
        for _ in range(steps):
            action, state = agent.act(obs, state, episode_start=start, action_mask=info.get("action_mask"))
            assert isinstance(action, np.integer) and action.dtype == env.action_space.dtype, type(action)
            taken.append(int(action))
            obs, reward, terminated, truncated, info = env.step(action)
            running += float(reward)
            start = terminated or truncated
            if start:
                total = running if total is None else total
                obs, info = env.reset()
        assert total is not None, f"env {i} ended its first episode"
        returns.append(total)
        actions.append(taken)
        env.close()
    return returns, actions


@pytest.mark.parametrize(("run_name", "env_id"), [("taxi_run", "Taxi-v4"), ("blackjack_run", "Blackjack-v1")])
def test_an_agent_in_a_gymnasium_loop_acts_as_evaluation_does(run_name, env_id, request):
    run = request.getfixturevalue(run_name)
    agent = load_agent(run)
    expected, evaluated_actions = evaluate(run, GymVectorEnv(env_id, NUM_ENVS, seed=11), NUM_ENVS)
    returns, actions = gym_loop(agent, env_id, 11, NUM_ENVS, len(evaluated_actions))
    assert returns == pytest.approx(expected)
    for i, taken in enumerate(actions):
        assert taken == [int(step[i]) for step in evaluated_actions], f"env {i}"


def test_a_batch_of_gymnasium_observations_acts_as_its_single_observations(taxi_run, blackjack_run):
    for run, env_id in ((taxi_run, "Taxi-v4"), (blackjack_run, "Blackjack-v1")):
        agent = load_agent(run)
        envs = gym.make_vec(env_id, num_envs=3)
        obs, info = envs.reset(seed=5)
        mask = info.get("action_mask")
        batch, state = agent.act(obs, action_mask=mask)
        assert isinstance(batch, np.ndarray) and batch.shape == (3,) and batch.dtype == envs.action_space.dtype
        singles = [agent.act(tuple(part[i] for part in obs) if isinstance(obs, tuple) else obs[i],
                             action_mask=None if mask is None else mask[i])[0] for i in range(3)]
        assert batch.tolist() == [int(a) for a in singles], env_id
        assert state.hidden[0].shape[1] == 3
        envs.close()


def test_the_frozen_normalizer_keeps_its_statistics_across_act_calls(masked_choice_run):
    agent = load_agent(masked_choice_run)
    before = save_tensors(agent.obs_normalizer)
    env = make_env("masked-choice", NUM_ENVS, "cpu")
    obs, state = env.reset(), None
    for _ in range(5):
        action, state = agent.act(obs, state)
        obs = env.step(action).obs
    after = save_tensors(agent.obs_normalizer)
    assert all(torch.equal(before[key], after[key]) for key in before), "act never updates the statistics"
    normalizer = load_obs_normalizer(masked_choice_run)
    saved = save_tensors(normalizer)
    normalizer(obs)  # the default call applies them and leaves them be
    assert all(torch.equal(saved[key], value) for key, value in save_tensors(normalizer).items())


def test_the_previous_action_is_what_the_agent_did_and_resets_at_an_episode_start(masked_choice_run):
    agent = load_agent(masked_choice_run)
    obs = make_env("masked-choice", NUM_ENVS, "cpu").reset()
    action, state = agent.act(obs)
    assert torch.equal(state.previous_action, action), "the state carries the env action just taken"
    moved = state._replace(previous_action=(state.previous_action + 1) % torch.tensor([3, 4]))
    _, after = agent.act(obs, state)
    _, after_moved = agent.act(obs, moved)
    assert not torch.allclose(after.hidden[0], after_moved.hidden[0]), "the policy sees the previous action"
    _, fresh = agent.act(obs, moved, episode_start=torch.ones(NUM_ENVS, dtype=torch.bool))
    _, from_none = agent.act(obs)
    assert all(torch.equal(a, b) for a, b in zip(fresh.hidden, from_none.hidden)), \
        "an episode start shows the null action and zero state, whatever the state carried"


def test_torch_input_gives_tensors_and_numpy_input_gives_numpy(pendulum_run):
    agent = load_agent(pendulum_run)
    obs = torch.tensor([[0.1, -0.2], [0.3, 0.0]])
    action, _ = agent.act(obs)
    assert isinstance(action, torch.Tensor) and action.shape == (2, 1)
    single, _ = agent.act(obs[0].numpy().astype(np.float64))
    assert isinstance(single, np.ndarray) and single.shape == (1,) and single.dtype == np.float32
    np.testing.assert_allclose(single, action[0].numpy(), atol=1e-6)


def test_observations_that_do_not_fit_are_refused_with_what_fits(taxi_run, masked_choice_run):
    taxi = load_agent(taxi_run)
    with pytest.raises(ValueError, match="trained with action masks: pass the env's info"):
        taxi.act(3)
    with pytest.raises(ValueError, match="holds .* values; pass them as integers"):
        taxi.act(3.0, action_mask=np.ones(6, np.int8))
    with pytest.raises(ValueError, match=r"observation 'action_mask' has shape \[5\]"):
        taxi.act(3, action_mask=np.ones(5, np.int8))
    choice = load_agent(masked_choice_run)
    obs = make_env("masked-choice", NUM_ENVS, "cpu").reset()
    with pytest.raises(ValueError, match="given twice"):
        choice.act(obs, action_mask=obs["action_mask"])
    _, state = choice.act(obs)
    with pytest.raises(ValueError, match="the state holds 4 envs and the observation 1"):
        choice.act({k: v[0] for k, v in obs.items()}, state)
