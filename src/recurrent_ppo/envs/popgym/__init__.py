"""Device ports of POPGym's tasks (Morad et al., ICLR 2023; the `popgym` package is the reference), by name.

`POPGYM_ENVS["popgym/<Family><Level>"]` builds `num_envs` copies of a task at the package's Easy, Medium or Hard
settings, with its observation and action spaces, episode lengths and reward scales (episode returns in
[-1, 1]). `memoryless_return(name)` is the expected return of a stated policy that sees only the current
observation (each class's `memoryless_policy`): the bar a memory model must clear on a learning benchmark. For the
card tasks it is the best such policy's, in closed form; MultiarmedBandit's is 0 (always one arm); elsewhere a
Monte Carlo estimate for a simple stated policy, a lower bound of the best.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import torch

from recurrent_ppo.envs.popgym import (
    autoencode,
    battleship,
    cartpole,
    concentration,
    count_recall,
    higher_lower,
    minesweeper,
    multiarmed_bandit,
    pendulum,
    repeat_first,
    repeat_previous,
)
from recurrent_ppo.envs.popgym.core import PopGymEnv, monte_carlo_return

_LEVELS: dict[type[PopGymEnv], dict[str, dict]] = {  # each family's constructor settings per difficulty
    repeat_previous.RepeatPrevious: repeat_previous.DIFFICULTIES,
    repeat_first.RepeatFirst: repeat_first.DIFFICULTIES,
    count_recall.CountRecall: count_recall.DIFFICULTIES,
    autoencode.Autoencode: autoencode.DIFFICULTIES,
    higher_lower.HigherLower: higher_lower.DIFFICULTIES,
    cartpole.PositionOnlyCartPole: cartpole.LENGTHS,
    cartpole.VelocityOnlyCartPole: cartpole.LENGTHS,
    cartpole.NoisyPositionOnlyCartPole: cartpole.NOISES,
    pendulum.PositionOnlyPendulum: pendulum.LENGTHS,
    pendulum.NoisyPositionOnlyPendulum: pendulum.NOISES,
    multiarmed_bandit.MultiarmedBandit: multiarmed_bandit.DIFFICULTIES,
    concentration.Concentration: concentration.DIFFICULTIES,
    minesweeper.MineSweeper: minesweeper.DIFFICULTIES,
    battleship.Battleship: battleship.DIFFICULTIES,
}

FAMILIES: dict[str, type[PopGymEnv]] = {family.__name__: family for family in _LEVELS}
"""Each task family's port, by POPGym's class name."""

POPGYM_ENVS: dict[str, Callable[[int, torch.device], PopGymEnv]] = {
    f"popgym/{family.__name__}{level}": partial(family, **settings)
    for family, levels in _LEVELS.items() for level, settings in levels.items()
}

MONTE_CARLO_EPISODES = 1024
"""Episodes of the Monte Carlo estimate of `memoryless_return` where there is no closed form."""


@cache
def memoryless_return(name: str) -> float:
    """The expected episode return of env `name`'s `memoryless_policy`: in closed form where there is one, else a
    Monte Carlo estimate over `MONTE_CARLO_EPISODES` episodes from a fixed seed (the global generator is left
    alone)."""
    if name not in POPGYM_ENVS:
        raise ValueError(f"unknown POPGym env {name!r}; choose one of {sorted(POPGYM_ENVS)}")
    exact = POPGYM_ENVS[name](1, torch.device("cpu")).exact_memoryless_return()
    return exact if exact is not None else monte_carlo_return(POPGYM_ENVS[name], MONTE_CARLO_EPISODES)[0]


__all__ = ["FAMILIES", "MONTE_CARLO_EPISODES", "POPGYM_ENVS", "memoryless_return"]
