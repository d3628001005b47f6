"""POPGym's Concentration on the device: the memory card game, played alone against the clock.

A shuffled `num_decks`-deck shoe (n cards) lies face down; each step turns one card. Two turned cards of the
same `deck_type` (colour or rank) stay face up and earn 1 / (n / 2); a mismatched pair (or the same card twice)
earns -2 / L and both go face down again; turning a card already face up earns -1 / L per card turned in that
turn (1 or 2) and ends the turn. The observation shows every face-up card and the cards turned this turn (after
a mismatch: both); the rest read `kinds` (face down). The episode ends terminated once all cards are face up, or
truncated after L = 2n steps. Easy: 1 deck, colours; Medium: 2 decks, colours; Hard: 1 deck, ranks.
"""

from __future__ import annotations

import math

import torch

from recurrent_ppo.envs.popgym.core import CARD_ATTRIBUTES, AutoResetEnv, card_values, random_keys, take
from recurrent_ppo.spaces import Discrete, MultiDiscrete

DIFFICULTIES = {"Easy": {"num_decks": 1, "deck_type": "colors"}, "Medium": {"num_decks": 2, "deck_type": "colors"},
                "Hard": {"num_decks": 1, "deck_type": "ranks"}}


class Concentration(AutoResetEnv):
    """`num_envs` copies; observation the table (MultiDiscrete([kinds + 1] * n), `kinds` = face down), action a
    card to turn (Discrete(n)). State: `cards [N, n]` (the deck_type of each place), `face_up [N, n]`, `turned
    [N]` (the place turned first this turn, -1 if none), `elapsed [N]`."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_decks: int = 1,
                 deck_type: str = "ranks") -> None:
        if num_decks < 1 or deck_type not in ("colors", "ranks"):
            raise ValueError(f"Concentration needs num_decks >= 1 and deck_type 'colors' or 'ranks' (suits do not "
                             f"pair up), got {num_decks}, {deck_type!r}")
        self.num_cards = n = 52 * num_decks
        self.kinds = CARD_ATTRIBUTES[deck_type]
        self.values = card_values(num_decks, deck_type, device)  # [n]
        self.observation_space = MultiDiscrete((self.kinds + 1,) * n)
        self.action_space = Discrete(n)
        self.max_episode_steps = math.ceil(2 * n - n / (2 * n - 1))  # POPGym's: a perfect player's mean, doubled
        self.success_reward = 1 / (n // 2)
        self.failure_reward = -1 / self.max_episode_steps
        super().__init__(num_envs, device)

    def _initial(self) -> dict[str, torch.Tensor]:
        keys = random_keys(self.num_envs, self.num_cards, self.device)
        zeros = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        face_up = torch.zeros(self.num_envs, self.num_cards, dtype=torch.bool, device=self.device)
        return {"cards": self.values[keys.argsort(dim=1)], "face_up": face_up, "turned": zeros - 1, "elapsed": zeros}

    def _show(self, cards, shown) -> torch.Tensor:
        return torch.where(shown, cards, self.kinds)

    def _observe(self, state) -> torch.Tensor:
        places = torch.arange(self.num_cards, device=state["cards"].device)
        return self._show(state["cards"], state["face_up"] | (places == state["turned"].unsqueeze(1)))

    def _advance(self, state, actions):
        cards, face_up, turned = state["cards"], state["face_up"], state["turned"]  # [N, n], [N, n], [N]
        places = torch.arange(self.num_cards, device=cards.device)
        second = turned >= 0  # this turn's second card
        already_up = take(face_up, actions)
        pair = second & ~already_up
        match = pair & (take(cards, turned.clamp(min=0)) == take(cards, actions)) & (turned != actions)
        reward = torch.where(already_up, self.failure_reward * (1 + second.float()),
                             torch.where(pair, torch.where(match, self.success_reward, 2 * self.failure_reward), 0.0))
        in_turn = (places == turned.unsqueeze(1)) | (places == actions.unsqueeze(1))  # [N, n]
        obs = self._show(cards, face_up | in_turn)
        face_up = face_up | (match.unsqueeze(1) & in_turn)
        turned = torch.where(already_up | second, -1, actions)
        elapsed = state["elapsed"] + 1
        terminated = face_up.all(dim=1)
        truncated = (elapsed >= self.max_episode_steps) & ~terminated
        next_state = {"cards": cards, "face_up": face_up, "turned": turned, "elapsed": elapsed}
        return next_state, obs, reward, terminated, truncated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Turn a uniformly random face-down card (any card if none shows face down)."""
        keys = torch.rand(obs.shape, device=obs.device) + (obs == self.kinds)
        return keys.argmax(dim=1)
