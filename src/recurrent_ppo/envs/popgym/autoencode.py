"""POPGym's Autoencode on the device: watch a shuffled shoe's suits, then recite them in reverse order.

Watch phase: the episode shows the first card of a shuffled `num_decks`-deck shoe (C cards) and one more per step
until all are shown, each with the flag 1, the last with flag 0 (play). Play phase: C steps, each action naming
the suit of the next card counted back from the last: +1 / C when right, -1 / C when wrong, so the return lies in
[-1, 1]; the play observations are (0, 0). An episode lasts 2C - 1 steps and ends terminated. Easy: 1 deck;
Medium: 2; Hard: 3.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import CardGame
from recurrent_ppo.spaces import Discrete, Tuple

DIFFICULTIES = {"Easy": {"num_decks": 1}, "Medium": {"num_decks": 2}, "Hard": {"num_decks": 3}}


class Autoencode(CardGame):
    """`num_envs` copies; observation Tuple(Discrete(2), Discrete(4)) as `{"0": watching flag [N], "1": suit
    [N]}`, action a suit (Discrete(4))."""

    observation_space = Tuple((Discrete(2), Discrete(4)))
    action_space = Discrete(4)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_decks: int = 1) -> None:
        super().__init__(num_envs, device, num_decks)
        self.max_episode_steps = 2 * self.num_cards - 1
        self.reward_scale = 1 / self.num_cards

    def _observe(self, state) -> dict[str, torch.Tensor]:
        shown, last = state["elapsed"], self.num_cards - 1
        suit = torch.where(shown <= last, self.card(state, "cards", shown.clamp(max=last)), 0)
        return {"0": (shown < last).long(), "1": suit}

    def _deal(self, state, actions):
        step = state["elapsed"] + 1  # [N]
        target = self.card(state, "cards", (2 * self.num_cards - 1 - step).clamp(0, self.num_cards - 1))
        reward = torch.where(actions == target, self.reward_scale, -self.reward_scale)
        reward = torch.where(step >= self.num_cards, reward, 0.0)
        terminated = step == 2 * self.num_cards - 1
        return {"elapsed": step}, self._observe({**state, "elapsed": step}), reward, terminated

    def memoryless_policy(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Name the suit shown: right at the first play step (which asks for the card still shown), then suit 0
        against a uniformly random card."""
        return obs["1"].clone()

    def exact_memoryless_return(self) -> float:
        c = self.num_cards
        return (1 + (c - 1) * (2 * 0.25 - 1)) / c
