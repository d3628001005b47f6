"""The device ports of POPGym's card tasks against the `popgym` package, and what all ports share.

Equivalence: each port is driven next to POPGym's own env (one per port env, so N envs check the batching) with
the same actions, after writing the reference's shuffled decks into the port's state; observations, rewards and
episode ends must then agree exactly at every step, through the episode's end and the auto-reset, for every
difficulty. The port's own shuffles are checked as distributions. Shared here: the reference driver, the
registry and spaces of every port, and the memoryless baselines of the card tasks (closed form against a Monte
Carlo run of the stated policy on the port).
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from recurrent_ppo.envs.popgym import FAMILIES, POPGYM_ENVS, memoryless_return
from recurrent_ppo.envs.popgym.core import card_values, dealing_order, monte_carlo_return, random_keys
from recurrent_ppo.spaces import action_from_gym, from_gym, obs_tensors
from tests.helpers import assert_close

popgym = pytest.importorskip("popgym")  # the reference; it brings gymnasium
np = pytest.importorskip("numpy")

LEVELS = ("Easy", "Medium", "Hard")
MODULES = {  # family: the popgym module defining it
    "RepeatPrevious": "repeat_previous", "RepeatFirst": "repeat_first", "CountRecall": "count_recall",
    "Autoencode": "autoencode", "HigherLower": "higher_lower", "MultiarmedBandit": "multiarmed_bandit",
    "Concentration": "concentration", "MineSweeper": "minesweeper", "Battleship": "battleship",
    "PositionOnlyCartPole": "position_only_cartpole", "VelocityOnlyCartPole": "velocity_only_cartpole",
    "NoisyPositionOnlyCartPole": "noisy_position_only_cartpole",
    "PositionOnlyPendulum": "position_only_pendulum", "NoisyPositionOnlyPendulum": "noisy_position_only_pendulum",
}


def reference(family: str, level: str):
    """POPGym's own env `<family><level>`."""
    module = importlib.import_module(f"popgym.envs.{MODULES[family]}")
    return getattr(module, family + level)()


def make(family: str, level: str, num_envs: int):
    """The port `<family><level>` with `num_envs` envs, reset, and one POPGym env per port env."""
    env = POPGYM_ENVS[f"popgym/{family}{level}"](num_envs, torch.device("cpu"))
    env.reset()
    return env, [reference(family, level) for _ in range(num_envs)]


def row(obs, i: int):
    """Env i's observation: a tensor, or a dict of them."""
    return {path: x[i] for path, x in obs.items()} if isinstance(obs, dict) else obs[i]


def as_tensor(ref_obs, like):
    """POPGym's observation (int, array or tuple) in the port's form (`like` is the port's row)."""
    if isinstance(like, dict):
        return {str(j): as_tensor(part, like[str(j)]) for j, part in enumerate(ref_obs)}
    return torch.as_tensor(np.asarray(ref_obs)).to(like.dtype)


def assert_obs(actual, ref_obs, name: str, **tolerances) -> None:
    expected = as_tensor(ref_obs, actual)
    if isinstance(actual, dict):
        for path in actual:
            assert_obs(actual[path], ref_obs[int(path)], f"{name}[{path}]", **tolerances)
    elif tolerances:
        assert_close(actual, expected, name, **tolerances)
    else:
        assert torch.equal(actual, expected), f"{name}: {actual.tolist()} != {expected.tolist()}"


def assert_same(actual, expected, name: str) -> None:
    """Two observations of the port (tensors, or dicts of them) are equal."""
    pairs = zip(obs_tensors(actual), obs_tensors(expected))
    assert all(torch.equal(a, b) for a, b in pairs), f"{name}: {actual} != {expected}"


def run_against(env, refs, inject, policy, steps: int, min_episodes: int = 1, current=None, compare=None,
                fresh_obs: bool = True, **tolerances) -> int:
    """Step `env` and its references `refs` (one per port env) together for `steps` steps; `inject(env, i, ref)`
    writes reference i's fresh episode into port env i (after each reset of the reference); `policy(t, refs)`
    gives the actions `[N, ...]`. Observations (`current(env)` after an injection: by default `env._observe` of
    its state) must agree with the reference's, compared by `compare(obs_row, ref_obs, name, ref)` (by default
    exactly, or within `tolerances`); rewards likewise; and the episodes end alike (POPGym may report terminated
    and truncated at once: the port reports terminated). Where an episode ended, the port's next observation must
    be `current(env)` of its fresh state (unless `fresh_obs` is false: noisy observations). Returns how many
    episodes were terminated and truncated; at least `min_episodes` must end."""
    current = current or (lambda env: env._observe(env.state))
    compare = compare or (lambda obs, ref_obs, name, ref: assert_obs(obs, ref_obs, name, **tolerances))
    seed = 1000
    for i, ref in enumerate(refs):
        ref_obs, _ = ref.reset(seed=seed + i)
        inject(env, i, ref)
        compare(row(current(env), i), ref_obs, f"env {i} reset obs", ref)
    ends = {"terminated": 0, "truncated": 0}
    for t in range(steps):
        actions = policy(t, refs)
        result = env.step(actions)
        for i, ref in enumerate(refs):
            action = actions[i].numpy() if actions.dim() > 1 else int(actions[i])
            ref_obs, ref_reward, terminated, truncated, _ = ref.step(action)
            where = f"env {i} step {t}"
            compare(row(result.final_obs, i), ref_obs, f"{where} obs", ref)
            reward = torch.tensor(ref_reward, dtype=torch.float32)
            if tolerances:
                assert_close(result.reward[i], reward, f"{where} reward", **tolerances)
            else:
                assert result.reward[i] == reward, f"{where} reward {float(result.reward[i])} != {ref_reward}"
            assert bool(result.terminated[i]) == terminated, f"{where} terminated"
            assert bool(result.truncated[i]) == (truncated and not terminated), f"{where} truncated"
            if terminated or truncated:
                ends["terminated" if terminated else "truncated"] += 1
                if fresh_obs:
                    assert_same(row(result.obs, i), row(current(env), i), f"{where}: the port's reset obs")
                seed += len(refs)
                ref_obs, _ = ref.reset(seed=seed + i)
                inject(env, i, ref)
                compare(row(current(env), i), ref_obs, f"{where} reset obs", ref)
            else:
                compare(row(result.obs, i), ref_obs, f"{where} next obs", ref)
    assert sum(ends.values()) >= min_episodes, f"only {ends} episodes ended in {steps} steps"
    return ends


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs of `a` and `b`."""
    both = torch.cat([a, b]).double().sort().values
    cdf = [torch.searchsorted(x.double().sort().values, both, right=True) / len(x) for x in (a, b)]
    return float((cdf[0] - cdf[1]).abs().max())


def ks_bound(n: int, m: int) -> float:
    """The KS distance two samples of one distribution exceed with chance 0.001."""
    return 1.95 * math.sqrt((n + m) / (n * m))


def random_actions(env):
    """A policy of uniformly random actions in `env`'s action space."""
    space = env.action_space
    if hasattr(space, "nvec"):
        return lambda t, refs: torch.stack([torch.randint(n, (env.num_envs,)) for n in space.nvec], dim=1)
    return lambda t, refs: torch.randint(space.n, (env.num_envs,))


# --- registry and spaces --------------------------------------------------------------------------------------

def test_registry_names_every_family_and_level():
    assert set(FAMILIES) == set(MODULES)
    assert sorted(POPGYM_ENVS) == sorted(f"popgym/{family}{level}" for family in FAMILIES for level in LEVELS)


@pytest.mark.parametrize("name", sorted(POPGYM_ENVS))
def test_spaces_and_episode_bounds_match_popgym(name):
    env = POPGYM_ENVS[name](2, torch.device("cpu"))
    family, level = next((f, name[len("popgym/") + len(f):]) for f in FAMILIES if name[len("popgym/"):] in
                         (f + lv for lv in LEVELS))
    ref = reference(family, level)
    assert env.observation_space == from_gym(ref.observation_space)
    assert env.action_space == action_from_gym(ref.action_space)
    assert not env.steps_on_host and env.num_envs == 2 and env.device == torch.device("cpu")
    lengths = {"HigherLower": lambda: ref.deck_size - 1, "Concentration": lambda: ref.episode_length}
    length = lengths.get(family, lambda: ref.max_episode_length)()
    assert env.max_episode_steps == length, "max_episode_steps is POPGym's episode length"


@pytest.mark.parametrize(("family", "kwargs", "message"), [
    ("RepeatPrevious", {"num_decks": 1, "k": 52}, "k < 52"),
    ("RepeatFirst", {"num_decks": 0}, "num_decks >= 1"),
    ("CountRecall", {"deck_type": "jokers"}, "deck_type"),
    ("HigherLower", {"num_decks": -1}, "num_decks >= 1"),
])
def test_bad_arguments_fail_loud(family, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FAMILIES[family](1, "cpu", **kwargs)
    with pytest.raises(ValueError, match="num_envs >= 1"):
        FAMILIES[family](0, "cpu")


# --- card tasks -----------------------------------------------------------------------------------------------

def deck_injector(attribute: str, *decks: tuple[str, str]):
    """`inject` for a card port: each (reference deck attribute, port deck) pair loads that popgym Deck's shuffled
    cards, as `attribute` values in dealing order, into the port's shoe in play."""

    def inject(env, i, ref):
        for deck_name, key in decks:
            deck = getattr(ref, deck_name)
            values = getattr(deck, f"{attribute}_idx")
            env.load_deck(i, [int(values[c]) for c in dealing_order(deck.idx)], key)

    return inject


CARD_TASKS = {  # family: (inject, extra steps past one episode)
    "RepeatPrevious": lambda level: deck_injector("suits", ("deck", "cards")),
    "RepeatFirst": lambda level: deck_injector("suits", ("deck", "cards")),
    "HigherLower": lambda level: deck_injector("ranks", ("deck", "cards")),
    "Autoencode": lambda level: deck_injector("suits", ("deck", "cards")),
    "CountRecall": lambda level: deck_injector({"Easy": "colors", "Medium": "suits", "Hard": "ranks"}[level],
                                               ("value_deck", "cards"), ("query_deck", "queries")),
}


def card_policy(family, env, refs):
    """Actions that are often right, so both signs of the reward occur: the true answer (read off the reference)
    half of the time, a random action otherwise."""
    random = random_actions(env)

    def answer(ref) -> int:
        if family == "RepeatPrevious":
            hand = ref.deck["player"]
            return int(ref.deck.suits_idx[hand[-ref.k]]) if len(hand) >= ref.k else 0
        if family == "RepeatFirst":
            return int(ref.card)
        if family == "CountRecall":
            return int(ref.counts[ref.query])
        if family == "Autoencode":
            hand = ref.deck["system"]
            return int(ref.deck.suits_idx[hand[-1]]) if ref.mode == 0 else 0
        return 0

    def policy(t, refs):
        truth = torch.tensor([answer(ref) for ref in refs])
        return torch.where(torch.rand(len(refs)) < 0.5, truth, random(t, refs))

    return policy


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("family", sorted(CARD_TASKS))
def test_card_task_matches_popgym_step_by_step(family, level):
    """Two envs, one episode each and a few steps of the next, exactly as POPGym with the same decks."""
    env, refs = make(family, level, 2)
    steps = env.max_episode_steps + 5
    ends = run_against(env, refs, CARD_TASKS[family](level), card_policy(family, env, refs), steps)
    assert ends == {"terminated": 2, "truncated": 0}, "both episodes last exactly max_episode_steps"


def in_play(env, deck: str = "cards") -> torch.Tensor:
    """`[N, C]`: each env's shoe in play."""
    return env.state[deck][torch.arange(env.num_envs), env.state["active"]]


@pytest.mark.parametrize("family", sorted(CARD_TASKS))
def test_card_task_auto_reset_plays_the_spare_shoe(family):
    """The shoe stays for the episode; its end plays the spare (shuffled meanwhile: the used one, or the
    unshuffled one after `reset`, is no longer in play) and keeps the used shoe as the next spare."""
    env = POPGYM_ENVS[f"popgym/{family}Easy"](3, torch.device("cpu"))
    env.reset()
    first = in_play(env).clone()
    for _ in range(env.max_episode_steps - 1):
        result = env.step(torch.zeros(3, dtype=torch.int64))
        assert not result.terminated.any()
        assert torch.equal(in_play(env), first), "the shoe stays for the whole episode"
    result = env.step(torch.zeros(3, dtype=torch.int64))
    assert result.terminated.all() and not result.truncated.any()
    assert (env.state["elapsed"] == 0).all() and (env.state["active"] == 1).all()
    assert torch.equal(env.state["cards"][:, 0], first), "the used shoe is the next spare"
    assert not torch.equal(in_play(env), card_values(1, env.attribute).expand(3, -1)), "the spare was shuffled"
    assert_same(result.obs, env._observe(env.state), "reset obs")


@pytest.mark.parametrize("which", ["reset", "spare"])
def test_shuffles_are_uniform_permutations(which):
    """Every deck holds each card once; each suit is equally likely at a given position (first, middle, last:
    within 5 standard errors of 1/4 over 4000 decks), and a spare shuffled during an episode is independent of
    the deck it replaces (same suit at a position 1/4 of the time)."""
    env = POPGYM_ENVS["popgym/RepeatPreviousEasy"](4000, torch.device("cpu"))
    used = in_play(env).clone()
    if which == "spare":
        for _ in range(env.max_episode_steps):
            env.step(torch.zeros(4000, dtype=torch.int64))
    cards = in_play(env)  # [N, 52]
    assert torch.equal(cards.sort(dim=1).values, card_values(1, "suits").sort().values.expand_as(cards))
    bound = 5 * math.sqrt(0.25 * 0.75 / 4000)
    for position in (0, 26, 51):
        freq = torch.bincount(cards[:, position], minlength=4).double() / 4000
        assert (freq - 0.25).abs().max() < bound, f"position {position}: {freq}"
    if which == "spare":
        same = (cards == used).double().mean(0)  # [52]
        assert (same - 0.25).abs().max() < bound, "the new deck does not depend on the old one"
    keys = random_keys(2, 5, torch.device("cpu"))
    assert keys.dtype == torch.int64 and (keys >= 0).all()


def test_count_recall_decks_are_independent():
    """The query deck is shuffled apart from the value deck: their first cards agree 1 / kinds of the time
    (colours: 1/2, within 5 standard errors over 4000 envs)."""
    env = POPGYM_ENVS["popgym/CountRecallEasy"](4000, torch.device("cpu"))
    agree = float((in_play(env)[:, 0] == in_play(env, "queries")[:, 0]).double().mean())
    assert abs(agree - 0.5) < 5 * math.sqrt(0.25 / 4000)


# --- memoryless baselines -------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("family", sorted(CARD_TASKS))
def test_card_memoryless_return_is_the_stated_policys(family, level):
    """The closed form equals a Monte Carlo run of the stated memoryless policy on the port (within 4.5
    standard errors of 1024 episodes, plus 1e-3), and lies in [-1, 1]."""
    name = f"popgym/{family}{level}"
    exact = memoryless_return(name)
    mean, stderr = monte_carlo_return(POPGYM_ENVS[name], episodes=1024)
    assert -1 <= exact <= 1
    assert abs(mean - exact) <= 4.5 * stderr + 1e-3, f"{name}: exact {exact:.4f}, Monte Carlo {mean:.4f} ± {stderr:.4f}"


def test_memoryless_returns_of_the_card_tasks():
    """Spot values worked out by hand: RepeatPrevious guesses another suit (13/51 right), HigherLower bets on
    the middle (84/169 whatever the decks), Autoencode gets the first play step right and 1/4 of the rest."""
    assert memoryless_return("popgym/RepeatPreviousEasy") == pytest.approx(2 * 13 / 51 - 1)
    assert memoryless_return("popgym/HigherLowerHard") == pytest.approx(84 / 169)
    assert memoryless_return("popgym/AutoencodeEasy") == pytest.approx((1 - 51 / 2) / 52)
    assert memoryless_return("popgym/RepeatFirstEasy") == pytest.approx((1 + 50 * (2 * 12 / 51 - 1)) / 51)
