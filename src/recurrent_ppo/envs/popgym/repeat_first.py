"""POPGym's RepeatFirst on the device: name the suit of the episode's first card, at every step.

The episode shows the first card of a shuffled `num_decks`-deck shoe, then deals one card per step; every action
is scored against the first card's suit: +1 / (C - 1) when right, -1 / (C - 1) when wrong (C cards), so the
return lies in [-1, 1]. An episode lasts C - 1 steps and ends terminated. Easy: 1 deck; Medium: 8; Hard: 16.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import CardGame
from recurrent_ppo.spaces import Discrete

DIFFICULTIES = {"Easy": {"num_decks": 1}, "Medium": {"num_decks": 8}, "Hard": {"num_decks": 16}}


class RepeatFirst(CardGame):
    """`num_envs` copies; observation the suit just dealt (Discrete(4)), action a suit (Discrete(4))."""

    observation_space = Discrete(4)
    action_space = Discrete(4)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_decks: int = 1) -> None:
        super().__init__(num_envs, device, num_decks)
        self.max_episode_steps = self.num_cards - 1
        self.reward_scale = 1 / (self.num_cards - 1)

    def _deal(self, state, actions):
        dealt, first = state["elapsed"] + 1, self.card(state, "cards", torch.zeros_like(state["elapsed"]))  # [N]
        reward = torch.where(actions == first, self.reward_scale, -self.reward_scale)
        terminated = dealt == self.num_cards - 1
        return {"elapsed": dealt}, self.card(state, "cards", dealt), reward, terminated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Name the suit shown: right at the first step, and only a little less likely than another suit later."""
        return obs.clone()

    def exact_memoryless_return(self) -> float:
        c, per_suit = self.num_cards, self.num_cards / 4
        same = (per_suit - 1) / (c - 1)  # a later card shares the first card's suit
        return (1 + (c - 2) * (2 * same - 1)) / (c - 1)
