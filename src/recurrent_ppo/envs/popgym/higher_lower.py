"""POPGym's HigherLower on the device: guess whether the next card's rank is higher or lower than this one's.

One step deals one card of a shuffled `num_decks`-deck shoe (C cards) and shows its rank; action 0 bets the new
rank is higher than the previous, 1 that it is lower: +1 / C when right, -1 / C when wrong, 0 on equal ranks. An
episode lasts C - 1 steps and ends terminated. Counting the cards dealt improves the odds. Easy: 1 deck;
Medium: 2; Hard: 3.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import CardGame
from recurrent_ppo.spaces import Discrete

DIFFICULTIES = {"Easy": {"num_decks": 1}, "Medium": {"num_decks": 2}, "Hard": {"num_decks": 3}}


class HigherLower(CardGame):
    """`num_envs` copies; observation the rank just dealt (Discrete(13)), action higher (0) or lower (1)."""

    attribute = "ranks"
    observation_space = Discrete(13)
    action_space = Discrete(2)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_decks: int = 1) -> None:
        super().__init__(num_envs, device, num_decks)
        self.max_episode_steps = self.num_cards - 1
        self.reward_scale = 1 / self.num_cards

    def _deal(self, state, actions):
        shown = state["elapsed"]  # [N]
        current, dealt = self.card(state, "cards", shown), self.card(state, "cards", shown + 1)
        right = (dealt > current) == (actions == 0)
        reward = torch.where(dealt == current, 0.0, torch.where(right, self.reward_scale, -self.reward_scale))
        terminated = shown + 1 == self.num_cards - 1
        return {"elapsed": shown + 1}, dealt, reward, terminated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Bet higher below the middle rank (6), lower above it."""
        return (obs >= 6).long()

    def exact_memoryless_return(self) -> float:
        # Shown rank r (uniform): of the C - 1 other cards 4 * decks * (12 - r) are higher and 4 * decks * r lower.
        # Each of the C - 1 steps earns |12 - 2r| * 4 * decks / ((C - 1) C) in expectation; 4 * decks / C = 1 / 13.
        return sum(abs(12 - 2 * r) for r in range(13)) / 13 / 13
