"""POPGym's RepeatPrevious on the device: name the suit of the card dealt k steps ago.

One step deals one card of a shuffled `num_decks`-deck shoe and shows its suit; from the k-th step on, the
action is scored against the suit of the card shown k steps before the new one: +1 / (C - k) when right,
-1 / (C - k) when wrong (C cards), so an episode's return lies in [-1, 1]. An episode lasts C - 1 steps and ends
terminated. Easy: 1 deck, k = 4; Medium: 2 decks, k = 32; Hard: 3 decks, k = 64.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.popgym.core import CardGame
from recurrent_ppo.spaces import Discrete

DIFFICULTIES = {"Easy": {"num_decks": 1, "k": 4}, "Medium": {"num_decks": 2, "k": 32},
                "Hard": {"num_decks": 3, "k": 64}}


class RepeatPrevious(CardGame):
    """`num_envs` copies; observation the suit just dealt (Discrete(4)), action a suit (Discrete(4))."""

    observation_space = Discrete(4)
    action_space = Discrete(4)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_decks: int = 1, k: int = 4) -> None:
        if not 1 <= k < 52 * num_decks:
            raise ValueError(f"RepeatPrevious needs 1 <= k < 52 * num_decks, got k={k}, num_decks={num_decks}")
        self.k = k
        super().__init__(num_envs, device, num_decks)
        self.max_episode_steps = self.num_cards - 1
        self.reward_scale = 1 / (self.num_cards - k)

    def _deal(self, state, actions):
        dealt = state["elapsed"] + 1  # [N]: the new card's position
        target = self.card(state, "cards", (dealt - self.k).clamp(min=0))
        scored = dealt >= self.k
        reward = torch.where(scored, torch.where(actions == target, self.reward_scale, -self.reward_scale), 0.0)
        terminated = dealt == self.num_cards - 1
        return {"elapsed": dealt}, self.card(state, "cards", dealt), reward, terminated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Name a suit other than the one shown: the card k back is a different card, a little more likely of
        another suit."""
        return (obs + 1) % 4

    def exact_memoryless_return(self) -> float:
        right = (self.num_cards / 4) / (self.num_cards - 1)  # another card is of a given other suit
        return 2 * right - 1
