"""POPGym ports under `torch.compile(fullgraph=True)`: one family of each kind (cards, boards, control) steps
exactly as eagerly, from the same seeds with the same actions, through auto-resets; and the memoryless baselines'
bookkeeping."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from recurrent_ppo.envs.popgym import POPGYM_ENVS, memoryless_return
from recurrent_ppo.envs.popgym.core import monte_carlo_return
from recurrent_ppo.spaces import obs_tensors


def step_both(name: str, num_envs: int, steps: int, actions, prepare=lambda env: None) -> int:
    """Step an eager env and a compiled one (aot_eager) `steps` times from the same seeds with `actions(t)`,
    after `prepare(env)` on both (to bring episode ends near); every output must be equal. Returns the episodes
    that ended."""
    torch._dynamo.reset()
    envs = []
    for _ in range(2):
        torch.manual_seed(0)
        env = POPGYM_ENVS[name](num_envs, torch.device("cpu"))
        env.reset()
        prepare(env)
        envs.append(env)
    eager, compiled = envs
    step = torch.compile(compiled.step, fullgraph=True, backend="aot_eager")
    ended = 0
    for t in range(steps):
        action = actions(t)
        torch.manual_seed(100 + t)
        expected = eager.step(action)
        torch.manual_seed(100 + t)
        got = step(action)
        for field, a, b in zip(expected._fields, expected, got):
            pairs = zip(obs_tensors(a), obs_tensors(b))
            assert all(torch.equal(x, y) for x, y in pairs), f"{name} step {t}: {field} differs"
        ended += int((expected.terminated | expected.truncated).sum())
    torch._dynamo.reset()
    return ended


def test_card_task_compiles_to_the_eager_step():
    """Autoencode: a dict observation, the spare shoe's in-place shuffle, episodes ending (at step 103: started
    at step 95 here) and the spare shoe in play after."""
    ended = step_both("popgym/AutoencodeEasy", 3, 12, lambda t: torch.randint(4, (3,)),
                      lambda env: env.state["elapsed"].fill_(95))
    assert ended == 3


def test_board_task_compiles_to_the_eager_step():
    """Battleship: MultiDiscrete actions and a fresh board drawn every step; sweeping the squares in order, the
    first hit sinks the last ship (11 of 12 hit already), so episodes end and the next boards are played."""
    order = torch.stack([torch.arange(64) // 8, torch.arange(64) % 8], dim=1)  # [64, 2]: every square once
    ended = step_both("popgym/BattleshipEasy", 2, 24, lambda t: order[t % 64].expand(2, 2),
                      lambda env: env.state["hits"].fill_(11))
    assert ended >= 2


def test_control_task_compiles_to_the_eager_step():
    """NoisyPositionOnlyCartPole: the repository's CartPole inside, noise drawn in the step; the carts start near
    the track's end and are pushed off it, so episodes end."""

    def near_the_end(env):
        env.cartpole.state[:, 0] = 2.3

    ended = step_both("popgym/NoisyPositionOnlyCartPoleEasy", 4, 16, lambda t: torch.ones(4, dtype=torch.int64),
                      near_the_end)
    assert ended >= 4


def test_memoryless_return_bookkeeping():
    """Unknown names fail loud; the Monte Carlo estimate leaves the global generator alone and repeats from its
    seed."""
    with pytest.raises(ValueError, match="unknown POPGym env"):
        memoryless_return("popgym/Pong")
    state = torch.random.get_rng_state()
    first = monte_carlo_return(POPGYM_ENVS["popgym/PositionOnlyPendulumHard"], episodes=64)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert monte_carlo_return(POPGYM_ENVS["popgym/PositionOnlyPendulumHard"], episodes=64) == first
    assert -1 <= first[0] <= 1 and first[1] > 0
