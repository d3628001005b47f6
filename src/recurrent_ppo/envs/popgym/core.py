"""What the POPGym ports share: an auto-resetting base class, the card deck, and the memoryless baseline.

Every port keeps its per-env state in a dict of tensors `[N, ...]`. A step computes the next state of every env,
a fresh episode's state for every env, and keeps the fresh one where the episode ended (`torch.where`), so shapes
stay static and nothing waits on the host. Random numbers come from torch's global generator, so
`torch.manual_seed` fixes the episodes.

The card tasks deal from POPGym's `Deck`: `52 * num_decks` cards where card `c` has suit `c % 4`, rank
`(c % 52) // 4` and colour `c % 2`. A port holds each episode's whole shuffled shoe and deals it in order (POPGym
deals from the end of its shuffled index array; `dealing_order` converts one into the other); the next episode's
shoe is shuffled a swap per step meanwhile (`CardGame`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.spaces import ActionSpace, Obs, Space

CARDS_PER_DECK = 52
CARD_ATTRIBUTES = {"suits": 4, "ranks": 13, "colors": 2}
"""How many distinct values each card attribute takes."""

KEY_RANGE = 2**62
"""Sort keys of random permutations and subsets are drawn from [0, KEY_RANGE): ties, which would order cards by
their index instead of at random, have a negligible chance (about C^2 / 2^63 per deck)."""


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x[i, index[i]]` for every env i: `x [N, C]`, `index [N]` int64, result `[N]` (a new tensor)."""
    return x.gather(1, index.unsqueeze(1)).squeeze(1)


def where_done(done: torch.Tensor, fresh: Obs, running: Obs) -> Obs:
    """The observation `fresh` where `done [N]`, else `running` (leaf by leaf for a dict)."""
    if isinstance(fresh, dict):
        return {path: where_done(done, x, running[path]) for path, x in fresh.items()}
    return torch.where(done.view(-1, *(1,) * (fresh.dim() - 1)), fresh, running)


def random_keys(num_envs: int, size: int, device: torch.device) -> torch.Tensor:
    """`[N, size]` int64 sort keys: their argsort is a uniform random permutation, their top k a uniform subset."""
    return torch.randint(KEY_RANGE, (num_envs, size), device=device)


def card_values(num_decks: int, attribute: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[52 * num_decks]` int64: the `attribute` (suits, ranks or colors) of each card, numbered as POPGym's Deck
    numbers them (`Deck.suits_idx`, `ranks_idx`, `colors_idx`)."""
    cards = torch.arange(CARDS_PER_DECK * num_decks, device=device)
    if attribute == "suits":
        return cards % 4
    if attribute == "ranks":
        return (cards % CARDS_PER_DECK) // 4
    if attribute == "colors":
        return cards % 2
    raise ValueError(f"unknown card attribute {attribute!r}; choose one of {sorted(CARD_ATTRIBUTES)}")


def dealing_order(deck_idx) -> list[int]:
    """The cards of POPGym's shuffled `Deck.idx` in the order `Deck.deal` hands them out (from the end)."""
    return [int(c) for c in reversed(deck_idx)]


class PopGymEnv:
    """`num_envs` copies of one POPGym task on `device`.

    Subclasses set the spaces and `max_episode_steps` and define `memoryless_policy`; `exact_memoryless_return`
    gives that policy's expected return in closed form where there is one (None: estimate it by Monte Carlo,
    `monte_carlo_return`).
    """

    steps_on_host = False
    observation_space: Space
    action_space: ActionSpace
    max_episode_steps: int | None

    def __init__(self, num_envs: int, device: torch.device | str) -> None:
        if num_envs < 1:
            raise ValueError(f"{type(self).__name__} needs num_envs >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.device = torch.device(device)

    def memoryless_policy(self, obs: Obs) -> torch.Tensor:
        """Actions `[N]` or `[N, K]` of a stated policy that sees only the current observation."""
        raise NotImplementedError

    def exact_memoryless_return(self) -> float | None:
        """The expected episode return of `memoryless_policy`, in closed form; None where there is none."""
        return None


class AutoResetEnv(PopGymEnv):
    """A port whose state is `self.state`, a dict of `[N, ...]` tensors; subclasses define the episode's start
    (`_initial`, `_fresh`), its observation (`_observe`) and one step (`_advance`), and this class resets
    finished envs."""

    def __init__(self, num_envs: int, device: torch.device | str) -> None:
        super().__init__(num_envs, device)
        self.state = {name: value.clone() for name, value in self._initial().items()}  # one buffer each

    def _initial(self) -> dict[str, torch.Tensor]:
        """A fresh episode's state for every env (at `reset`)."""
        raise NotImplementedError

    def _fresh(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A fresh episode's state for every env after a step that left `state`, kept where an episode ended:
        the entries a new episode changes (the others carry on)."""
        return self._initial()

    def _observe(self, state: dict[str, torch.Tensor]) -> Obs:
        """The first observation of the episodes `state` starts (new tensors, never views of it)."""
        raise NotImplementedError

    def _advance(self, state: dict[str, torch.Tensor], actions: torch.Tensor):
        """One step of every env: `(next_state, obs, reward, terminated, truncated)`, obs being the observation
        after the step and truncated false wherever terminated is true. An entry of next_state may be the old
        one updated in place."""
        raise NotImplementedError

    def reset(self) -> Obs:
        for name, value in self._initial().items():
            self.state[name].copy_(value)
        return self._observe(self.state)

    def step(self, actions: torch.Tensor) -> StepResult:
        state, final_obs, reward, terminated, truncated = self._advance(self.state, actions)
        done = terminated | truncated
        fresh = self._fresh(state)
        merged = {name: torch.where(done.view(-1, *(1,) * (value.dim() - 1)), fresh[name], value)
                  if name in fresh else value for name, value in state.items()}
        for name, value in merged.items():  # all computed first: a fresh value may be another's old state
            if value is not self.state[name]:
                self.state[name].copy_(value)
        obs = where_done(done, self._observe(self.state), final_obs)
        return StepResult(obs, reward, terminated, truncated, final_obs)


class BlankStart:
    """For an AutoResetEnv with a Discrete observation that shows nothing before the first action: 0."""

    def _observe(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros_like(state["elapsed"])


class NoisyObservations:
    """For a PopGymEnv subclass whose observations carry N(0, noise_sigma^2) noise per entry (`add_noise`)."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, noise_sigma: float = 0.1,
                 **settings) -> None:
        if not noise_sigma >= 0:
            raise ValueError(f"{type(self).__name__} needs noise_sigma >= 0, got {noise_sigma}")
        super().__init__(num_envs, device, **settings)
        self.noise_sigma = noise_sigma

    def add_noise(self, clean: torch.Tensor, low, high) -> torch.Tensor:
        """`clean` plus noise, clipped to [low, high] (numbers, or tensors broadcasting against it)."""
        return (clean + self.noise_sigma * torch.randn_like(clean)).clamp(low, high)


class CardGame(AutoResetEnv):
    """A task dealt from shuffled `num_decks`-deck shoes (C cards), one per name in `decks`. Each `state[deck]
    [N, 2, C]` holds two shoes, the `attribute` of every card in dealing order: the one in play,
    `state["active"] [N]`, and a spare; `state["elapsed"] [N]` counts the steps taken (the card shown is the one
    at position `elapsed`). Episodes are never truncated and last at least C - 1 steps.

    Shuffling a whole shoe at every step (for the envs that reset) would cost a sort of `[N, C]` per step.
    Instead the spare takes one Fisher-Yates swap per step (position `elapsed` with a uniform one at or after it):
    after the C - 1 steps of an episode it is a uniform shuffle, independent of the shoe in play, and the next
    episode plays it (flipping `active`) while the used one becomes the spare. A step costs O(N).
    """

    attribute = "suits"
    decks = ("cards",)

    def __init__(self, num_envs: int, device: torch.device | str, num_decks: int) -> None:
        if num_decks < 1:
            raise ValueError(f"{type(self).__name__} needs num_decks >= 1, got {num_decks}")
        self.num_decks = num_decks
        self.num_cards = CARDS_PER_DECK * num_decks
        self.values = card_values(num_decks, self.attribute, device)  # [C]
        super().__init__(num_envs, device)

    def card(self, state: dict[str, torch.Tensor], deck: str, position: torch.Tensor) -> torch.Tensor:
        """`[N]`: the card at `position [N]` of each env's shoe in play."""
        flat = state[deck].view(self.num_envs, 2 * self.num_cards)
        return take(flat, state["active"] * self.num_cards + position)

    def _started(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What an episode starts with besides its shoes, played from `state`; subclasses add what the first
        card implies."""
        return {"elapsed": torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)}

    def _initial(self) -> dict[str, torch.Tensor]:
        state = {"active": torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)}
        for deck in self.decks:
            keys = random_keys(self.num_envs, self.num_cards, self.device)
            spare = self.values.expand(self.num_envs, -1)  # shuffled during the episode
            state[deck] = torch.stack([self.values[keys.argsort(dim=1)], spare], dim=1)  # [N, 2, C]
        return {**state, **self._started(state)}

    def _fresh(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        swapped = {**state, "active": 1 - state["active"]}
        return {"active": swapped["active"], **self._started(swapped)}

    def load_deck(self, index: int, cards, deck: str = "cards") -> None:
        """Start env `index`'s episode over with the shoe `cards` (attribute values in dealing order) as `deck`:
        how tests replay a reference's deal."""
        active = int(self.state["active"][index])
        self.state[deck][index, active] = torch.as_tensor(cards, dtype=torch.int64, device=self.device)
        for name, value in self._started(self.state).items():
            self.state[name][index] = value[index]

    def _shuffle_spares(self, state: dict[str, torch.Tensor]) -> None:
        """Fisher-Yates step `elapsed` on every spare shoe, in place (a no-op once past C - 2)."""
        c = self.num_cards
        i = state["elapsed"].clamp(max=c - 1)
        offset = (1 - state["active"]) * c
        for deck in self.decks:
            j = i + random_keys(self.num_envs, 1, self.device).squeeze(1) % (c - i)
            flat = state[deck].view(self.num_envs, 2 * c)
            at_i, at_j = take(flat, offset + i), take(flat, offset + j)
            flat.scatter_(1, (offset + i).unsqueeze(1), at_j.unsqueeze(1))
            flat.scatter_(1, (offset + j).unsqueeze(1), at_i.unsqueeze(1))

    def _deal(self, state: dict[str, torch.Tensor], actions: torch.Tensor):
        """One step of the game: `(changes, obs, reward, terminated)`, changes the entries of the state it moves
        on (`elapsed`, ...)."""
        raise NotImplementedError

    def _advance(self, state, actions):
        changes, obs, reward, terminated = self._deal(state, actions)
        self._shuffle_spares(state)  # after the deal: it reads the shoe in play only
        return {**state, **changes}, obs, reward, terminated, torch.zeros_like(terminated)

    def _observe(self, state: dict[str, torch.Tensor]) -> Obs:
        return self.card(state, "cards", state["elapsed"])


def monte_carlo_return(make_env: Callable[[int, torch.device], PopGymEnv], episodes: int = 2048,
                       seed: int = 0) -> tuple[float, float]:
    """Mean and standard error of the return of the env's `memoryless_policy` over `episodes` episodes (one per
    env, on the CPU), drawn from `seed` without touching the global generator's state."""
    if episodes < 2:
        raise ValueError(f"monte_carlo_return needs episodes >= 2, got {episodes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        env = make_env(episodes, torch.device("cpu"))
        if env.max_episode_steps is None:
            raise ValueError(f"{type(env).__name__} has no bound on its episodes' length to run them to")
        obs = env.reset()
        total = torch.zeros(episodes, dtype=torch.float64)
        running = torch.ones(episodes, dtype=torch.bool)
        for _ in range(env.max_episode_steps):
            result = env.step(env.memoryless_policy(obs))
            total += result.reward.double() * running
            running &= ~(result.terminated | result.truncated)
            obs = result.obs
        if running.any():
            raise RuntimeError(f"{type(env).__name__}: episodes ran past max_episode_steps")
    return float(total.mean()), float(total.std() / episodes**0.5)
