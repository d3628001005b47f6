"""The previous action in the observation (POPGym's PreviousAction + Antialias on the device): its space, its
values step by step across auto-resets, its null action, and a compiled training run that evaluates from its
checkpoint."""

import pytest
import torch

from recurrent_ppo import spaces
from recurrent_ppo.cli import main
from recurrent_ppo.envs import make_env
from recurrent_ppo.envs.previous_action import IS_FIRST, PREVIOUS_ACTION, null_action, with_previous_action

CPU = torch.device("cpu")


def test_spaces_gain_the_previous_action_and_the_first_step_flag():
    env = make_env("popgym/RepeatPreviousEasy", 4, CPU, previous_action=True)
    assert env.observation_space == spaces.Dict((("obs", spaces.Discrete(4)), (PREVIOUS_ACTION, spaces.Discrete(4)),
                                                 (IS_FIRST, spaces.Discrete(2))))
    masked = make_env("masked-choice", 4, CPU, previous_action=True).observation_space
    keys = [key for key, _ in masked.spaces]
    assert keys == ["obs", spaces.ACTION_MASK, PREVIOUS_ACTION, IS_FIRST], "the mask stays at the top"
    pendulum = make_env("stateless-pendulum", 4, CPU, previous_action=True)
    assert dict(pendulum.observation_space.spaces)[PREVIOUS_ACTION] == spaces.Box((1,), -2.0, 2.0)
    with pytest.raises(ValueError, match="already has \\['prev_action'\\]"):
        with_previous_action(spaces.Dict(((PREVIOUS_ACTION, spaces.Discrete(2)),)), spaces.Discrete(2))


def test_null_action_is_zero_where_the_space_holds_it_else_its_lowest():
    assert int(null_action(spaces.Discrete(3, start=-1), CPU)) == 0
    assert int(null_action(spaces.Discrete(3, start=2), CPU)) == 2
    assert null_action(spaces.MultiDiscrete((3, 2), start=(1, -1)), CPU).tolist() == [1, 0]
    assert null_action(spaces.Box((2,), (0.5, -1.0), 1.0), CPU).tolist() == [0.5, 0.0]


@pytest.mark.parametrize("name", ["popgym/RepeatPreviousEasy", "masked-choice", "stateless-pendulum"])
def test_each_observation_holds_the_action_before_it_and_episode_starts_hold_the_null_one(name):
    torch.manual_seed(0)
    env, plain = make_env(name, 6, CPU, previous_action=True), make_env(name, 6, CPU)
    inner_space = env.env.observation_space

    def both(call):  # the wrapped and the plain env from the same random draws
        state = torch.get_rng_state()
        wrapped = call(env)
        torch.set_rng_state(state)
        return wrapped, call(plain)

    def assert_passes_through(wrapped, inner):
        inner = inner if isinstance(inner, dict) else {"": inner}
        for path, x in inner.items():
            key = path if isinstance(inner_space, spaces.Dict) else ("obs" + (f"/{path}" if path else ""))
            assert torch.equal(wrapped[key], x), path

    obs, plain_obs = both(lambda e: e.reset())
    assert_passes_through(obs, plain_obs)
    null = env.null.expand(6, *env.null.shape)
    assert torch.equal(obs[PREVIOUS_ACTION], null) and obs[IS_FIRST].tolist() == [1] * 6
    spaces.check_obs(env.observation_space, obs, "reset")
    starts = 0
    for _ in range(210):  # past the longest episode here (Pendulum's 200 steps)
        if isinstance(env.action_space, spaces.Box):
            actions = torch.rand(6, *env.action_space.shape) * 4 - 2
        elif isinstance(env.action_space, spaces.MultiDiscrete):
            actions = torch.stack([torch.randint(0, n, (6,)) for n in env.action_space.nvec], dim=1)
        else:
            actions = torch.randint(0, env.action_space.n, (6,))
        result, plain_result = both(lambda e: e.step(actions))
        assert_passes_through(result.obs, plain_result.obs)
        assert_passes_through(result.final_obs, plain_result.final_obs)
        assert torch.equal(result.reward, plain_result.reward)
        done = result.terminated | result.truncated
        starts += int(done.sum())
        spaces.check_obs(env.observation_space, result.obs, "step")
        spaces.check_obs(env.observation_space, result.final_obs, "final")
        taken = actions.reshape(null.shape).to(null.dtype)
        rows = done.reshape(-1, *(1,) * (null.dim() - 1))
        assert torch.equal(result.obs[PREVIOUS_ACTION], torch.where(rows, null, taken))
        assert torch.equal(result.obs[IS_FIRST], done.long())
        assert torch.equal(result.final_obs[PREVIOUS_ACTION], taken), "the last step's observation saw its action"
        assert not result.final_obs[IS_FIRST].any()
    assert starts > 0, "the steps crossed episode ends"


def test_a_compiled_run_with_the_previous_action_trains_and_evaluates(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--env", "popgym/MultiarmedBanditEasy", "--previous-action", "--num-envs", "4",
                 "--num-steps", "16", "--seq-len", "8", "--num-minibatches", "2", "--total-steps", "128",
                 "--hidden-dim", "8", "--update-epochs", "1", "--eval-episodes", "2", "--device", "cpu",
                 "--compile-mode", "default", "--compile-backend", "aot_eager", "--no-progress",
                 "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "2", "--num-envs", "2", "--device", "cpu"]) == 0
    assert "deterministic evaluation over 2 episodes" in capsys.readouterr().out
