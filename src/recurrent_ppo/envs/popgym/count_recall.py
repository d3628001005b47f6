"""POPGym's CountRecall on the device: say how often the queried card has been dealt so far.

Two shuffled `num_decks`-deck shoes (C cards each) are dealt side by side, one card of each per step: a value
card and a query card, both shown as their `deck_type` (colors, suits or ranks). The action answers how many
value cards so far (the shown one included) match the query shown: +1 / (C - 1) when exact, -1 / (C - 1)
otherwise, so the return lies in [-1, 1]. An episode lasts C - 1 steps and ends terminated. Easy: 1 deck,
colours; Medium: 2 decks, suits; Hard: 4 decks, ranks. (POPGym's `error_clamp` argument is unused there, so
there is none here.)
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import torch

from recurrent_ppo.envs.popgym.core import CARD_ATTRIBUTES, CardGame, take
from recurrent_ppo.spaces import Discrete, MultiDiscrete

DIFFICULTIES = {"Easy": {"num_decks": 1, "deck_type": "colors"}, "Medium": {"num_decks": 2, "deck_type": "suits"},
                "Hard": {"num_decks": 4, "deck_type": "ranks"}}


class CountRecall(CardGame):
    """`num_envs` copies; observation `[value card, query card]` (MultiDiscrete([D, D]), D kinds of card), action
    a count (Discrete(C / D + 1)). State: the `cards` (value) and `queries` shoes, `counts [N, D]` of the value
    cards dealt, `elapsed`."""

    decks = ("cards", "queries")

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_decks: int = 1,
                 deck_type: str = "colors") -> None:
        if deck_type not in CARD_ATTRIBUTES:
            raise ValueError(f"CountRecall deck_type must be one of {sorted(CARD_ATTRIBUTES)}, got {deck_type!r}")
        self.attribute = deck_type
        self.kinds = CARD_ATTRIBUTES[deck_type]
        super().__init__(num_envs, device, num_decks)
        self.copies = self.num_cards // self.kinds  # cards of each kind
        self.observation_space = MultiDiscrete((self.kinds, self.kinds))
        self.action_space = Discrete(self.copies + 1)
        self.max_episode_steps = self.num_cards - 1
        self.reward_scale = 1 / (self.num_cards - 1)

    def _started(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        first = self.card(state, "cards", torch.zeros_like(state["active"]))
        return {**super()._started(state), "counts": torch.nn.functional.one_hot(first, self.kinds)}  # [N, D]

    def _observe(self, state) -> torch.Tensor:
        shown = state["elapsed"]
        return torch.stack([self.card(state, "cards", shown), self.card(state, "queries", shown)], dim=1)  # [N, 2]

    def _deal(self, state, actions):
        target = take(state["counts"], self.card(state, "queries", state["elapsed"]))  # [N]: the count asked for
        dealt = state["elapsed"] + 1
        counts = state["counts"] + torch.nn.functional.one_hot(self.card(state, "cards", dealt), self.kinds)
        reward = torch.where(actions == target, self.reward_scale, -self.reward_scale)
        terminated = dealt == self.num_cards - 1
        changes = {"counts": counts, "elapsed": dealt}
        return changes, self._observe({**state, **changes}), reward, terminated

    def memoryless_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """Answer the most likely count over a uniformly random step, given only whether the value card shown
        matches the query."""
        guesses = torch.tensor(_best_guesses(self.num_cards, self.kinds), device=obs.device)
        return guesses[(obs[:, 0] == obs[:, 1]).long()]

    def exact_memoryless_return(self) -> float:
        return _memoryless(self.num_cards, self.kinds)[1]


def _hypergeometric(population: int, successes: int, draws: int, k: int) -> float:
    return comb(successes, k) * comb(population - successes, draws - k) / comb(population, draws)


@lru_cache
def _memoryless(cards: int, kinds: int) -> tuple[tuple[int, int], float]:
    """Best answers (no match, match) and the expected return. The step scored after e earlier value cards asks
    for the query's count among e + 1 cards; knowing the shown card matches (chance 1 / kinds) leaves a
    hypergeometric count of the e others (cards - 1 of them, copies - 1 or copies of the query's kind)."""
    copies, steps = cards // kinds, cards - 1
    guesses, right = [], 0.0
    for match, chance in ((0, 1 - 1 / kinds), (1, 1 / kinds)):
        hits = [0.0] * (copies + 1)  # summed over the steps: the chance that the count is each value
        for earlier in range(steps):
            for k in range(max(0, earlier - (cards - 1 - copies + match)), min(copies - match, earlier) + 1):
                hits[k + match] += _hypergeometric(cards - 1, copies - match, earlier, k)
        best = max(range(copies + 1), key=hits.__getitem__)
        guesses.append(best)
        right += chance * hits[best] / steps
    return (guesses[0], guesses[1]), 2 * right - 1


def _best_guesses(cards: int, kinds: int) -> tuple[int, int]:
    return _memoryless(cards, kinds)[0]
