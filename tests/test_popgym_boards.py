"""The device ports of POPGym's board and bandit tasks against the `popgym` package.

Equivalence: after each reset of POPGym's env its hidden board (bandit chances, card places, mines, ships) is
written into the port's state, and both are driven with the same actions; observations, rewards and episode
ends must agree exactly at every step, for every difficulty, through terminations, truncations and auto-resets.
MultiarmedBandit's payouts are random at every step, so its chances are set to 0 or 1 for the step-by-step check
and its payout frequencies are checked apart. The port's own draws (chances, mines, ship placements) are checked
as distributions, with the tolerances each test states.
"""

from __future__ import annotations

import math

import pytest
import torch

from recurrent_ppo.envs.popgym import POPGYM_ENVS, memoryless_return
from recurrent_ppo.envs.popgym.battleship import Battleship
from recurrent_ppo.envs.popgym.minesweeper import block_counts
from tests.test_popgym import LEVELS, ks_bound, ks_distance, make, random_actions, reference, run_against

np = pytest.importorskip("numpy")
pytest.importorskip("popgym")


# --- MultiarmedBandit -----------------------------------------------------------------------------------------

def bandit_inject(env, i, ref):
    """Chances of 0 or 1 (so each pull's outcome is certain) in both envs."""
    certain = (torch.rand(env.num_bandits) < 0.5).float()
    ref.bandits = certain.numpy().astype(np.float32)
    env.state["bandits"][i] = certain
    env.state["elapsed"][i] = 0


@pytest.mark.parametrize("level", LEVELS)
def test_bandit_matches_popgym(level):
    env, refs = make("MultiarmedBandit", level, 2)
    ends = run_against(env, refs, bandit_inject, random_actions(env), env.max_episode_steps + 3)
    assert ends == {"terminated": 0, "truncated": 2}, "truncated after max_episode_steps, never terminated"


def test_bandit_chances_are_uniform_and_pay_at_their_rate():
    """Chances: KS distance to POPGym's (10 x 300 resets) under the 0.001 bound; payouts of a 0.3 arm: within 5
    standard errors of 0.3 over 4000 pulls."""
    env = POPGYM_ENVS["popgym/MultiarmedBanditEasy"](300, torch.device("cpu"))
    ref = reference("MultiarmedBandit", "Easy")
    theirs = torch.cat([torch.from_numpy(ref.reset(seed=s)[1]["bandits"].copy()) for s in range(300)])
    ours = env.state["bandits"].flatten()
    assert ks_distance(ours, theirs) < ks_bound(len(ours), len(theirs))
    env = POPGYM_ENVS["popgym/MultiarmedBanditEasy"](4000, torch.device("cpu"))
    env.state["bandits"].fill_(0.3)
    paid = env.step(torch.zeros(4000, dtype=torch.int64)).final_obs.double().mean()
    assert abs(float(paid) - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 4000)
    assert memoryless_return("popgym/MultiarmedBanditHard") == 0.0


# --- Concentration --------------------------------------------------------------------------------------------

def concentration_inject(env, i, ref):
    env.state["cards"][i] = torch.from_numpy(ref.state.copy())
    env.state["face_up"][i] = False
    env.state["turned"][i] = -1
    env.state["elapsed"][i] = 0


def concentration_policy(env):
    """Env 0 mostly plays perfectly (it clears the table: terminated), the others at random (truncated); all
    sometimes turn a face-up card or the card just turned."""

    def choose(ref, skill: float) -> int:
        up, turned = ref.deck["face_up_idx"], ref.deck["in_play_idx"]
        down = [p for p in range(len(ref.state)) if p not in up]
        roll = float(torch.rand(()))
        if roll < 0.05 and up:
            return up[int(torch.randint(len(up), ()))]
        if roll < 0.08 and turned:
            return turned[0]
        if roll < skill:
            if turned:
                partners = [p for p in down if p != turned[0] and ref.state[p] == ref.state[turned[0]]]
                return partners[0] if partners else down[0]
            return down[int(torch.randint(len(down), ()))]
        return int(torch.randint(len(ref.state), ()))

    def policy(t, refs):
        return torch.tensor([choose(ref, 0.97 if i == 0 else 0.0) for i, ref in enumerate(refs)])

    return policy


@pytest.mark.parametrize("level", LEVELS)
def test_concentration_matches_popgym(level):
    env, refs = make("Concentration", level, 2)
    ends = run_against(env, refs, concentration_inject, concentration_policy(env), env.max_episode_steps + 3)
    assert ends == {"terminated": 1, "truncated": 1}, "env 0 clears the table, env 1 runs out of time"


def test_concentration_tables_are_shuffled_decks():
    """Every table holds the deck once; each colour is equally likely at a place (within 5 standard errors of
    1/2 over 4000 tables); the first observation is all face down."""
    env = POPGYM_ENVS["popgym/ConcentrationMedium"](4000, torch.device("cpu"))
    cards = env.state["cards"]
    assert (cards.sum(1) == 52).all() and ((cards == 0) | (cards == 1)).all()
    freq = cards.double().mean(0)  # [104]
    assert (freq - 0.5).abs().max() < 5 * math.sqrt(0.25 / 4000)
    assert (env.reset() == 2).all()


# --- MineSweeper ----------------------------------------------------------------------------------------------

def minesweeper_inject(env, i, ref):
    env.state["mines"][i] = torch.from_numpy(ref.hidden_grid == 1).flatten()
    env.state["counts"][i] = torch.from_numpy(ref.neighbor_grid.astype(np.int64)).flatten()
    env.state["cleared"][i] = False
    env.state["elapsed"][i] = 0


def minesweeper_policy(env):
    """Env 0 clicks new free squares only (it wins: terminated), env 1 free squares, some again (truncated), env
    2 at random (it hits mines: terminated)."""
    random = random_actions(env)

    def policy(t, refs):
        actions = random(t, refs)
        for i, hidden in ((0, 0), (1, None)):
            grid = refs[i].hidden_grid
            free = np.argwhere(grid == hidden) if hidden is not None else np.argwhere(grid != 1)
            actions[i] = torch.from_numpy(free[int(torch.randint(len(free), ()))])
        return actions

    return policy


@pytest.mark.parametrize("level", LEVELS)
def test_minesweeper_matches_popgym(level):
    env, refs = make("MineSweeper", level, 3)
    ends = run_against(env, refs, minesweeper_inject, minesweeper_policy(env), 2 * env.max_episode_steps)
    assert ends["terminated"] >= 3 and ends["truncated"] >= 1, ends


@pytest.mark.parametrize("level", LEVELS)
def test_minesweeper_mines_and_counts(level):
    """Exactly num_mines mines, each square as likely (within 5 standard errors of M / (H W) over 4000 boards);
    the 3x3 counts equal POPGym's for its boards."""
    env = POPGYM_ENVS[f"popgym/MineSweeper{level}"](4000, torch.device("cpu"))
    mines = env.state["mines"]
    assert (mines.sum(1) == env.num_mines).all()
    p = env.num_mines / mines.shape[1]
    assert (mines.double().mean(0) - p).abs().max() < 5 * math.sqrt(p * (1 - p) / 4000)
    ref = reference("MineSweeper", level)
    for seed in range(5):
        ref.reset(seed=seed)
        grid = torch.from_numpy(ref.hidden_grid == 1)[None]
        assert torch.equal(block_counts(grid)[0], torch.from_numpy(ref.neighbor_grid.astype(np.int64)))


# --- Battleship -----------------------------------------------------------------------------------------------

def battleship_inject(env, i, ref):
    env.state["ships"][i] = torch.from_numpy(ref.board == 1).flatten()
    env.state["shot"][i] = False
    env.state["hits"][i] = 0
    env.state["elapsed"][i] = 0


def battleship_policy(env):
    """Env 0 works through its ship squares in order, re-shooting the last one hit now and then and shooting at
    random otherwise (it sinks all: terminated); env 1 shoots at random but never at one of its ship squares (it
    cannot sink all: truncated). Both see hits, misses and repeated shots."""
    random = random_actions(env)
    progress: dict[bytes, list] = {}  # env 0's board -> the ship squares it has shot, in order

    def policy(t, refs):
        actions = random(t, refs)
        board = refs[0].board
        done = progress.setdefault(board.tobytes(), [])
        left = [tuple(square) for square in np.argwhere(board == 1) if tuple(square) not in done]
        draw = float(torch.rand(()))
        if draw < 0.7 and left:
            done.append(left[0])
            actions[0] = torch.tensor(left[0])
        elif draw < 0.8 and done:
            actions[0] = torch.tensor(done[-1])  # a second shot at a hit square: a miss
        spared = tuple(np.argwhere(refs[1].board == 1)[-1])
        if tuple(actions[1].tolist()) == spared:
            actions[1] = torch.tensor(np.argwhere(refs[1].board == 0)[0])
        return actions

    return policy


@pytest.mark.parametrize("level", LEVELS)
def test_battleship_matches_popgym(level):
    env, refs = make("Battleship", level, 2)
    ends = run_against(env, refs, battleship_inject, battleship_policy(env), env.max_episode_steps + 3)
    assert ends["terminated"] >= 1 and ends["truncated"] >= 1, ends


@pytest.mark.parametrize("level", LEVELS)
def test_battleship_boards_are_distributed_as_popgym(level):
    """12 ship squares per board (no overlap); the chance of a ship on each square, and on each ring of squares
    (by distance from the edge), agrees with 600 POPGym boards within 5 standard errors of the difference."""
    ref = reference("Battleship", level)
    b = ref.board_size
    theirs = []
    for seed in range(600):
        ref.reset(seed=seed)
        theirs.append(torch.from_numpy(ref.board.astype(np.float64)))
    theirs = torch.stack(theirs)  # [600, B, B]
    env = POPGYM_ENVS[f"popgym/Battleship{level}"](4000, torch.device("cpu"))
    ours = env.state["ships"].view(4000, b, b).double()
    assert (ours.sum((1, 2)) == 12).all()
    p_ours, p_theirs = ours.mean(0), theirs.mean(0)
    se = (p_ours * (1 - p_ours) / 4000 + p_theirs * (1 - p_theirs) / 600).sqrt()
    assert ((p_ours - p_theirs).abs() < 5 * se + 1e-3).all()
    index = torch.arange(b)
    ring = torch.minimum(torch.minimum(index[:, None], index[None, :]), torch.minimum(b - 1 - index[:, None],
                                                                                       b - 1 - index[None, :]))
    for r in range(b // 2):
        a, c = ours[:, ring == r].mean(1), theirs[:, ring == r].mean(1)  # per board
        gap, se = float(a.mean() - c.mean()), math.sqrt(a.var() / 4000 + c.var() / 600)
        assert abs(gap) < 5 * se, f"ring {r}: {float(a.mean()):.4f} vs popgym {float(c.mean()):.4f}"


def test_each_episode_starts_from_a_board_of_its_own():
    """The next boards are drawn a share of the envs per step: an oracle that sinks every ship in the fewest shots
    (12, the shortest episode) still starts every episode on a new, whole board."""
    torch.manual_seed(0)
    env = Battleship(10, board_size=8)
    env.reset()
    starts = [[board.clone()] for board in env.state["ships"]]
    for _ in range(12 * 6):
        left = env.state["ships"] & ~env.state["shot"]
        square = left.float().argmax(1)  # the first ship square not yet shot
        result = env.step(torch.stack([square // 8, square % 8], dim=1))
        assert (result.reward > 0).all(), "every shot of the oracle hits"
        for i in result.terminated.nonzero().flatten().tolist():
            starts[i].append(env.state["ships"][i].clone())
    for boards in starts:
        assert len(boards) == 7 and all(int(board.sum()) == 12 for board in boards)
        assert len({tuple(board.tolist()) for board in boards}) == len(boards), "no board serves two episodes"


def test_one_ship_is_placed_uniformly():
    """A lone 4-square ship on 8x8 takes each of its 80 placements alike: chi-square over 8000 boards under
    df + 5 sqrt(2 df)."""
    env = Battleship(8000, board_size=8, ship_sizes=(4,))
    ships = env.state["ships"].view(8000, 8, 8)
    first = ships.flatten(1).float().argmax(1)  # the top-left square
    row, col = first // 8, first % 8
    horizontal = ships.flatten(1)[torch.arange(8000), (first + 1).clamp(max=63)] & (col < 7)
    assert (ships.sum((1, 2)) == 4).all()
    placement = torch.where(horizontal, 40 + row * 5 + col, row * 8 + col)
    counts = torch.bincount(placement, minlength=80).double()
    assert counts.numel() == 80 and (counts > 0).all()
    chi2 = float(((counts - 100) ** 2 / 100).sum())
    assert chi2 < 79 + 5 * math.sqrt(2 * 79), chi2


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("MultiarmedBandit", {"num_bandits": 1}, "num_bandits >= 2"),
    ("Concentration", {"deck_type": "suits"}, "do not pair up"),
    ("MineSweeper", {"dims": (2, 2), "num_mines": 2}, "num_mines <= squares - 3"),
    ("Battleship", {"board_size": 3}, "ships of 2 to board_size"),
])
def test_bad_arguments_fail_loud(name, kwargs, message):
    from recurrent_ppo.envs.popgym import FAMILIES

    with pytest.raises(ValueError, match=message):
        FAMILIES[name](1, "cpu", **kwargs)
