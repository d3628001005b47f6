"""Gymnasium envs through GymVectorEnv: the StepResult contract, seeding, space checks, and training on one."""

import json

import pytest
import torch

from recurrent_ppo.cli import main
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


# --- bad input at the boundary: one clear error, before any training ------------------------------------------

def spec_env(name, obs_space, action_space=None, **outputs):
    from tests.gym_envs import register

    return register(name, observation_space=obs_space, action_space=action_space or gym.spaces.Discrete(2),
                    **outputs)


BOX4 = gym.spaces.Box(-1.0, 1.0, (4,))
POS = gym.spaces.Dict({"pos": gym.spaces.Discrete(5), "x": gym.spaces.Box(-1.0, 1.0, (2,))})


@pytest.mark.parametrize("env_id,message", [
    (spec_env("ShortObs", BOX4, reset_obs=lambda t: np.zeros(3, np.float32)),
     r"gym:rppo-test/ShortObs-v0: reset\(\) returned an observation of shape \(3,\) and dtype float32; expected "
     r"shape \(4,\) and a float dtype, against its declared space Box\(shape=\(4,\)"),
    (spec_env("IntObs", BOX4, step_obs=lambda t: np.zeros(4, np.int64)),
     r"gym:rppo-test/IntObs-v0: step\(\) returned an observation of shape \(4,\) and dtype int64; expected shape "
     r"\(4,\) and a float dtype"),
    (spec_env("FloatPos", POS, step_obs=lambda t: {"pos": np.float64(1.0), "x": np.zeros(2, np.float32)}),
     r"gym:rppo-test/FloatPos-v0: step\(\) returned an observation 'pos' of shape \(\) and dtype float64; "
     r"expected shape \(\) and integers, against its declared space Discrete\(n=5, start=0\)"),
    (spec_env("PosOutOfRange", POS, reset_obs=lambda t: {"pos": np.int64(7), "x": np.zeros(2, np.float32)}),
     r"gym:rppo-test/PosOutOfRange-v0: reset\(\) returned an observation 'pos' of values 7 outside \[0, 4\]"),
    (spec_env("ShortMask", BOX4, gym.spaces.Discrete(4), mask=np.ones(3, np.int8)),
     r"gym:rppo-test/ShortMask-v0: reset\(\) returned info\['action_mask'\] of shape \(3,\) and dtype int8; the "
     r"actions need shape \(4,\) of 0/1 \(int8 or bool\)"),
    (spec_env("FloatMask", BOX4, gym.spaces.Discrete(4), mask=np.ones(4, np.float32)),
     r"gym:rppo-test/FloatMask-v0: reset\(\) returned info\['action_mask'\] of shape \(4,\) and dtype float32"),
    (spec_env("TextObs", gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Text(4)))),
     r"gym:rppo-test/TextObs-v0: unsupported space Text\(.*\) at '1' of the observation space: observations may "
     r"be Box, Discrete"),
    (spec_env("MultiBinaryAction", BOX4, gym.spaces.MultiBinary(3)),
     r"gym:rppo-test/MultiBinaryAction-v0: unsupported space MultiBinary\(3\) as the action space"),
], ids=["short-obs", "int-for-float", "float-discrete-in-dict", "out-of-range", "short-mask", "float-mask",
        "text-in-tuple", "multibinary-action"])
def test_an_env_breaking_its_spaces_fails_before_the_first_update(tmp_path, env_id, message):
    """One ValueError naming the env, the call, the field, expected and got, raised while the Trainer is built:
    nothing is written to the run folder."""
    with pytest.raises(ValueError, match=message):
        GymVectorEnv(env_id, 2)
    cfg = TrainConfig(env=f"gym:{env_id}", num_envs=2, num_steps=8, seq_len=4, total_steps=16, hidden_dim=8,
                      num_minibatches=1, progress=False, run_dir=str(tmp_path / "run"), device="cpu",
                      compile_mode="off")
    with pytest.raises(ValueError, match=message):
        Trainer(cfg).train()
    run = tmp_path / "run"
    assert not run.exists() or {p.name for p in run.iterdir()} <= {"config.json"}


def test_every_output_of_each_vector_env_copy_is_checked_naming_the_copy_and_its_step():
    """The probe's episode may pass; each copy's resets and steps are checked as well, every one of them."""
    from recurrent_ppo.envs.gym_adapter import OutputCheck, checked
    from tests.gym_envs import SpecEnv

    bad = SpecEnv(BOX4, gym.spaces.Discrete(2), step_obs=lambda t: np.zeros(5 if t == 3 else 4, np.float32))
    wrapped = checked(bad, OutputCheck("gym:Bad", BOX4, None), index=2)
    wrapped.reset(seed=0)
    wrapped.step(0)
    wrapped.step(0)
    with pytest.raises(ValueError, match=r"gym:Bad: env 2's step\(\) number 3 returned an observation of shape \(5,\)"):
        wrapped.step(0)


def test_a_mask_inside_a_dict_observation_is_used_as_it_is():
    """An env whose Dict observation holds its own "action_mask" (a 0/1 int8 Box, as gymnasium envs declare it)
    gets it on the device as bool, the info's mask ignored."""
    from recurrent_ppo.spaces import Dict, Discrete, MultiBinary

    obs_space = gym.spaces.Dict({"action_mask": gym.spaces.Box(0, 1, (3,), np.int8), "pos": gym.spaces.Discrete(4)})
    env_id = spec_env("DictMask", obs_space, gym.spaces.Discrete(3),
                      reset_obs=lambda t: {"action_mask": np.array([1, 0, 1], np.int8), "pos": np.int64(t % 4)},
                      step_obs=lambda t: {"action_mask": np.array([0, 1, 1], np.int8), "pos": np.int64(t % 4)},
                      mask=np.ones(3, np.int8))
    env = GymVectorEnv(env_id, 2)
    assert env.observation_space == Dict((("action_mask", MultiBinary((3,))), ("pos", Discrete(4))))
    obs = env.reset()
    assert obs["action_mask"].dtype == torch.bool and obs["action_mask"].tolist() == [[True, False, True]] * 2
    assert env.step(torch.tensor([0, 2])).obs["action_mask"].tolist() == [[False, True, True]] * 2


def test_an_unknown_gymnasium_env_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "--env", "gym:NoSuchEnv-v0", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "env 'gym:NoSuchEnv-v0' cannot be made" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
