"""The device ports of POPGym's CartPole and Pendulum variants against the `popgym` package.

Equivalence: the reference's state is written into the port's at each episode's start (float32, and back into the
reference so both start alike) and again before every step, so each step is compared from one state: observations
and rewards within float32 rounding (rtol 1e-4, atol 1e-5), episode ends exactly, for every difficulty, through
terminations (random pushes), truncations (a balancing controller) and auto-resets. The noisy variants' noise
(observation minus the true one, after clipping) is compared as a distribution with POPGym's: two-sample KS at
chance 0.001, plus its standard deviation against sigma where clipping is rare.
"""

from __future__ import annotations

import pytest
import torch

from recurrent_ppo.envs.cartpole import INIT_RANGE
from recurrent_ppo.envs.pendulum import angle_normalize
from recurrent_ppo.envs.popgym import POPGYM_ENVS
from recurrent_ppo.envs.popgym.cartpole import POSITION_BOUND, POSITIONS
from tests.test_popgym import LEVELS, assert_obs, ks_bound, ks_distance, make, run_against

np = pytest.importorskip("numpy")
pytest.importorskip("popgym")

TOLERANCES = {"rtol": 1e-4, "atol": 1e-5}
BALANCE = torch.tensor([0.1, 0.3, 1.0, 1.0])  # push right when this . [x, x_dot, theta, theta_dot] > 0


def cartpole_inject(env, i, ref):
    env.cartpole.state[i] = torch.tensor(ref.state, dtype=torch.float32)
    env.cartpole.elapsed[i] = 0
    ref.state = env.cartpole.state[i].double().numpy().copy()


def head_start(inject, inner: str, skip: int, envs: tuple[int, ...]):
    """`inject`, but the first episode of `envs` starts `skip` steps in (port and reference count them), so the
    time limit comes soon."""
    started = set()

    def start(env, i, ref):
        inject(env, i, ref)
        if i in envs and i not in started:
            started.add(i)
            getattr(env, inner).elapsed[i] = skip
            ref.num_steps = skip

    return start


def cartpole_policy(env):
    """Env 0 balances (its episodes run to the time limit), the others push at random (and fall); every state is
    copied into the reference before the step."""

    def policy(t, refs):
        for i, ref in enumerate(refs):
            ref.state = env.cartpole.state[i].double().numpy().copy()
        actions = torch.randint(2, (env.num_envs,))
        actions[0] = int(env.cartpole.state[0] @ BALANCE > 0)
        return actions

    return policy


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("family", ["PositionOnlyCartPole", "VelocityOnlyCartPole"])
def test_cartpole_matches_popgym(family, level):
    """Env 0 balances from 60 steps before the limit (truncated, then 10 steps more), env 1 falls, repeatedly."""
    env, refs = make(family, level, 2)
    inject = head_start(cartpole_inject, "cartpole", env.max_episode_steps - 60, envs=(0,))
    ends = run_against(env, refs, inject, cartpole_policy(env), 70,
                       current=lambda env: env.cartpole.state[:, POSITIONS], **TOLERANCES)
    assert ends["terminated"] >= 2 and ends["truncated"] == 1, ends
    assert int(env.cartpole.elapsed[0]) == 10, "the balanced episode was truncated at the time limit"


def noisy_against(family: str, level: str, inject, policy, clean_of, bound, current, steps: int):
    """Run the noisy port `<family><level>` (4 envs) against POPGym's (rewards and episode ends to float32
    rounding, every observation within `bound`) and return the noise of both, `[samples, 2]` each: observation
    minus `clean_of(ref)`, the true one."""
    env, refs = make(family, level, 4)
    noise = {"port": [], "popgym": []}

    def compare(obs, ref_obs, name, ref):
        clean = clean_of(ref)
        ref_obs = torch.as_tensor(np.asarray(ref_obs, dtype=np.float32))
        for key, x in (("port", obs), ("popgym", ref_obs)):
            assert (x.abs() <= bound).all(), f"{name}: {key} observation {x.tolist()} outside the bounds"
            noise[key].append(x - clean)

    run_against(env, refs, inject, policy(env), steps, min_episodes=0, compare=compare, fresh_obs=False,
                current=current, **TOLERANCES)
    return env, torch.stack(noise["port"]), torch.stack(noise["popgym"])


def assert_same_noise(port: torch.Tensor, ref: torch.Tensor) -> None:
    """Each entry's noise is distributed alike in port and reference (KS at chance 0.001)."""
    for j in range(2):
        distance = ks_distance(port[:, j], ref[:, j])
        assert distance < ks_bound(len(port), len(ref)), f"entry {j}: KS distance {distance:.3f}"


@pytest.mark.parametrize("level", LEVELS)
def test_noisy_cartpole_matches_popgym(level):
    """Observations as a noise distribution, whose deviation on x (rarely clipped at 4.8) is sigma within 15%."""
    env, port, ref = noisy_against(
        "NoisyPositionOnlyCartPole", level, cartpole_inject, cartpole_policy,
        lambda ref: torch.tensor(ref.state, dtype=torch.float32)[POSITIONS], torch.tensor(POSITION_BOUND),
        lambda env: env.observe(env.cartpole.state), 150)
    assert_same_noise(port, ref)
    assert abs(float(port[:, 0].std()) / env.noise_sigma - 1) < 0.15


def test_cartpole_episodes_start_as_popgym_shows_them():
    """Fresh states are uniform in +-0.05 (all four variables); VelocityOnly shows positions at an episode's
    first step, velocities after, and its final observation is velocities."""
    env = POPGYM_ENVS["popgym/VelocityOnlyCartPoleEasy"](500, torch.device("cpu"))
    obs = env.reset()
    state = env.cartpole.state
    assert state.abs().max() <= INIT_RANGE and state.abs().max() > 0.9 * INIT_RANGE
    assert torch.equal(obs, state[:, POSITIONS])
    state[0] = torch.tensor([2.39, 1.0, 0.0, 0.0])  # leaves the track this step
    result = env.step(torch.ones(500, dtype=torch.int64))
    assert bool(result.terminated[0]) and not result.terminated[1:].any()
    assert result.final_obs[0, 0] > 0.9, "the final observation shows velocities"
    assert torch.equal(result.obs[0], env.cartpole.state[0, POSITIONS]), "a new episode shows positions"
    assert torch.equal(result.obs[1:], env.cartpole.state[1:, 1::2]), "running episodes show velocities"
    assert torch.allclose(result.reward, torch.full((500,), 1 / 200))


def pendulum_inject(env, i, ref):
    th, thdot = ref.state
    env.pendulum.state[i] = torch.tensor([float(angle_normalize(torch.tensor(th))), thdot], dtype=torch.float32)
    env.pendulum.elapsed[i] = 0
    ref.state = env.pendulum.state[i].double().numpy().copy()


def pendulum_policy(env):
    """Random torques, some outside [-2, 2] (both clip); every state is copied into the reference first."""

    def policy(t, refs):
        for i, ref in enumerate(refs):
            ref.state = env.pendulum.state[i].double().numpy().copy()
        return torch.empty(env.num_envs, 1).uniform_(-3.0, 3.0)

    return policy


def pendulum_obs(env):
    th = env.pendulum.state[:, 0]
    return torch.stack([torch.cos(th), torch.sin(th)], dim=1)


@pytest.mark.parametrize("level", LEVELS)
def test_pendulum_matches_popgym(level):
    """Two envs from 30 steps before the limit: truncated, then 5 steps of the next episode."""
    env, refs = make("PositionOnlyPendulum", level, 2)
    inject = head_start(pendulum_inject, "pendulum", env.max_episode_steps - 30, envs=(0, 1))
    ends = run_against(env, refs, inject, pendulum_policy(env), 35, current=pendulum_obs, rtol=1e-5, atol=1e-5)
    assert ends == {"terminated": 0, "truncated": 2}, "truncated after max_episode_steps, never terminated"


@pytest.mark.parametrize("level", LEVELS)
def test_noisy_pendulum_matches_popgym(level):
    """Observations as a noise distribution (clipping to [-1, 1] is frequent here: the deviation is checked apart,
    away from the bounds)."""

    def clean(ref):
        th = torch.tensor(ref.state[0])
        return torch.stack([torch.cos(th), torch.sin(th)]).float()

    _, port, ref = noisy_against("NoisyPositionOnlyPendulum", level, pendulum_inject, pendulum_policy, clean, 1.0,
                                 lambda env: env.observe(pendulum_obs(env)), 120)
    assert_same_noise(port, ref)


def test_noise_is_gaussian_with_sigma():
    """Far from the bounds the noise is N(0, sigma^2): mean within 5 standard errors of 0, deviation within 5%
    of sigma over 4000 x 2 draws."""
    env = POPGYM_ENVS["popgym/NoisyPositionOnlyPendulumHard"](4000, torch.device("cpu"))
    clean = torch.zeros(4000, 2)
    noise = env.observe(clean)  # [N, 2]: around 0, clipping at 1 is > 3 sigma away
    assert abs(float(noise.mean())) < 5 * 0.3 / (8000**0.5)
    assert abs(float(noise.std()) / 0.3 - 1) < 0.05


def test_pendulum_reward_is_rescaled_to_minus_one_one_per_episode():
    env = POPGYM_ENVS["popgym/PositionOnlyPendulumHard"](2, torch.device("cpu"))
    env.reset()
    env.pendulum.state[:] = torch.tensor([[0.0, 0.0], [torch.pi - 1e-6, 8.0]])  # upright still; down, fastest
    result = env.step(torch.tensor([[0.0], [2.0]]))
    assert_obs(result.reward, np.array([1 / 100, -1 / 100], dtype=np.float32), "reward", rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("PositionOnlyCartPole", {"max_episode_length": 0}, "max_episode_length >= 1"),
    ("NoisyPositionOnlyCartPole", {"noise_sigma": -0.1}, "noise_sigma >= 0"),
    ("PositionOnlyPendulum", {"max_episode_length": 0}, "max_episode_length >= 1"),
    ("NoisyPositionOnlyPendulum", {"noise_sigma": float("nan")}, "noise_sigma >= 0"),
])
def test_bad_arguments_fail_loud(name, kwargs, message):
    from recurrent_ppo.envs.popgym import FAMILIES

    with pytest.raises(ValueError, match=message):
        FAMILIES[name](1, "cpu", **kwargs)
