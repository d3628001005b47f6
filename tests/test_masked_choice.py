"""The masked memory task: spaces, masks that change every step, rewards, the memoryless bound, auto-reset, the
compiled step equal to the eager one, and learning beyond the memoryless bound."""

import pytest
import torch

from recurrent_ppo.config import PRESETS
from recurrent_ppo.envs.masked_choice import MaskedChoice, memoryless_return
from recurrent_ppo.spaces import ACTION_MASK, Box, Dict, MultiBinary, MultiDiscrete
from recurrent_ppo.trainer import Trainer
from tests.helpers import compiled_matches_eager

STEP_FIELDS = ("obs", "reward", "terminated", "truncated", "final_obs")


def parts(mask: torch.Tensor, nvec=(3, 4)) -> list[torch.Tensor]:
    """A flat `[N, sum(nvec)]` mask split per part."""
    return list(mask.split(list(nvec), dim=1))


def uniform_legal(mask: torch.Tensor, nvec=(3, 4)) -> torch.Tensor:
    """One uniformly random legal option per part: `[N, K]`."""
    return torch.stack([torch.rand(part.shape).masked_fill(~part, -1.0).argmax(1) for part in parts(mask, nvec)], 1)


def test_masked_choice_spaces_and_dtypes():
    env = MaskedChoice(16)
    assert env.observation_space == Dict((("obs", Box((8,), 0.0, 1.0)), (ACTION_MASK, MultiBinary((7,)))))
    assert env.action_space == MultiDiscrete((3, 4))
    assert (env.max_episode_steps, env.steps_on_host) == (9, False)
    obs = env.reset()
    for t in range(12):
        assert set(obs) == {"obs", ACTION_MASK}
        assert obs["obs"].shape == (16, 8) and obs["obs"].dtype == torch.float32
        assert ((obs["obs"] == 0) | (obs["obs"] == 1)).all()
        assert obs[ACTION_MASK].shape == (16, 7) and obs[ACTION_MASK].dtype == torch.bool
        result = env.step(uniform_legal(obs[ACTION_MASK]))
        assert result.reward.shape == (16,) and result.reward.dtype == torch.float32
        assert result.terminated.dtype == result.truncated.dtype == torch.bool
        assert set(result.final_obs) == {"obs", ACTION_MASK}
        obs = result.obs


def test_masks_change_every_step_keep_two_legal_and_the_cue_at_the_query():
    env = MaskedChoice(1024)
    obs = env.reset()
    cue = env.cue.clone()
    assert torch.equal(obs["obs"][:, :7], torch.cat([torch.nn.functional.one_hot(c, n) for c, n in
                                                     zip(cue.unbind(1), (3, 4))], 1).float()), "the cue, shown"
    cue_legal_before_query = []
    for t in range(9):
        mask = obs[ACTION_MASK]
        assert all((part.sum(1) >= 2).all() for part in parts(mask)), f"two legal options per part at step {t}"
        cue_legal = torch.stack([part.gather(1, c[:, None])[:, 0] for part, c in zip(parts(mask), cue.unbind(1))], 1)
        assert bool(obs["obs"][:, 7].all()) == (t == 8), "the query flag"
        if t == 8:
            assert cue_legal.all(), "the cue's answer is always legal at the query"
        else:
            cue_legal_before_query.append(cue_legal.float().mean())
            assert not obs["obs"][:, 7].any() and (t == 0 or not obs["obs"][:, :7].any()), "blank before the query"
        obs_next = env.step(uniform_legal(mask)).obs
        assert (obs_next[ACTION_MASK] != mask).any(1).float().mean() > 0.5, "the legal options change every step"
        obs = obs_next
    # Before the query the anchor is random, so the cue's value is legal only as often as any option is:
    # 1/n (anchor) + (n-1)/n * 1/(n-1) (second) + (n-2)/n * legal_prob, i.e. 5/6 and 3/4 for the two parts.
    assert float(torch.stack(cue_legal_before_query).mean()) == pytest.approx((5 / 6 + 3 / 4) / 2, abs=0.02)


def test_masked_choice_rewards_the_remembered_cue_and_punishes_illegal_actions():
    env = MaskedChoice(6, delay=2)
    obs = env.reset()
    for t in range(2):  # before the query: legal actions earn 0, each illegal part costs illegal_penalty / K
        actions = uniform_legal(obs[ACTION_MASK])
        illegal = parts(~obs[ACTION_MASK])[1].float().argmax(1)  # an illegal option of part 2, where one exists
        has_illegal = parts(~obs[ACTION_MASK])[1].any(1)
        actions[:, 1] = torch.where(has_illegal, illegal, actions[:, 1])
        result = env.step(actions)
        assert torch.equal(result.reward, torch.where(has_illegal, -0.5, 0.0)), f"step {t}"
        assert not result.terminated.any()
        obs = result.obs
    mask, cue = obs[ACTION_MASK], env.cue.clone()
    wrong = uniform_legal(mask & ~torch.cat([torch.nn.functional.one_hot(c, n) for c, n in
                                             zip(cue.unbind(1), (3, 4))], 1).bool())  # legal, not the cue
    assert parts(mask)[0].gather(1, wrong[:, :1]).all() and (wrong != cue).all()
    answers = cue.clone()  # envs 0, 1 remember both parts, 2 and 3 one part each, 4 and 5 none
    answers[2, 1], answers[3, 0], answers[4:] = wrong[2, 1], wrong[3, 0], wrong[4:]
    result = env.step(answers)
    assert result.terminated.all() and not result.truncated.any()
    assert result.reward.tolist() == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]


def test_memoryless_return_is_exact_and_matches_a_uniform_legal_policy():
    assert memoryless_return() == pytest.approx(37 / 96)  # (E[1/|L|] over 3 options + over 4) / 2
    assert memoryless_return((3, 4), 0.0) == pytest.approx(0.5), "two legal options each: a coin flip"
    assert memoryless_return((3, 4), 1.0) == pytest.approx((1 / 3 + 1 / 4) / 2), "everything legal"
    assert MaskedChoice(1, nvec=(2, 5), legal_prob=0.3).memoryless_return() == memoryless_return((2, 5), 0.3)
    # Monte Carlo: 8192 envs x 2 episodes of a uniform-legal policy; the episode return's std is ~0.34, so its
    # mean's standard error is ~0.0027 and 0.012 is over 4 of them.
    env = MaskedChoice(8192, delay=2)
    obs, total = env.reset(), torch.zeros(())
    for _ in range(6):
        result = env.step(uniform_legal(obs[ACTION_MASK]))
        total += result.reward.sum()
        obs = result.obs
    assert float(total) / (2 * 8192) == pytest.approx(env.memoryless_return(), abs=0.012)


def test_masked_choice_terminated_envs_reset_and_report_final_obs():
    env = MaskedChoice(4, delay=3)
    obs = env.reset()
    env.elapsed.copy_(torch.tensor([0, 3, 1, 3]))  # envs 1 and 3 answer now
    env.mask.fill_(True)
    old_cue = env.cue.clone()
    result = env.step(old_cue)
    assert result.terminated.tolist() == [False, True, False, True] and not result.truncated.any()
    assert result.reward.tolist() == [0.0, 1.0, 0.0, 1.0]
    done = result.terminated
    assert not result.final_obs["obs"][done].any(), "past the query there is nothing to see"
    assert result.final_obs[ACTION_MASK][done].all(), "and no action follows"
    for key in ("obs", ACTION_MASK):
        assert torch.equal(result.obs[key][~done], result.final_obs[key][~done]), f"running envs: {key} equal"
    fresh = result.obs["obs"][done]
    assert torch.equal(fresh[:, :3].sum(1), torch.ones(2)) and torch.equal(fresh[:, 3:7].sum(1), torch.ones(2))
    assert not fresh[:, 7].any(), "a new cue, no query"
    assert env.elapsed.tolist() == [1, 0, 2, 0]
    assert torch.equal(env.cue[~done], old_cue[~done])
    assert torch.equal(result.obs[ACTION_MASK], env.mask) and result.obs[ACTION_MASK] is not env.mask
    assert obs["obs"].shape == (4, 8)


def test_masked_choice_compiled_step_equals_eager():
    actions = [torch.stack([torch.randint(0, 3, (8,)), torch.randint(0, 4, (8,))], 1) for _ in range(8)]

    def check(expected, actual, t):
        for name in ("reward", "terminated", "truncated"):
            assert torch.equal(getattr(actual, name), getattr(expected, name)), f"{name} at step {t}"
        for which in ("obs", "final_obs"):
            for key in ("obs", ACTION_MASK):
                assert torch.equal(getattr(actual, which)[key], getattr(expected, which)[key]), f"{which}[{key}] {t}"
        assert bool(expected.terminated.all()) == (t in (2, 5))

    compiled_matches_eager(lambda: MaskedChoice(8, delay=2), actions, check)


def test_masked_choice_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every entry >= 2"):
        MaskedChoice(1, nvec=(3, 1))
    with pytest.raises(ValueError, match="non-empty nvec"):
        MaskedChoice(1, nvec=())
    with pytest.raises(ValueError, match="delay >= 1"):
        MaskedChoice(1, delay=0)
    with pytest.raises(ValueError, match="legal_prob in"):
        MaskedChoice(1, legal_prob=1.5)


# --- learning (eager: at 32 envs on one thread these train about as fast eager as compiled, and a cold compile
# would cost more than their training; the compile contract is tests/test_compile.py's) ------------------------

@pytest.mark.slow(seconds=38)
def test_learns_masked_choice_beyond_the_memoryless_best(tmp_path):
    cfg = PRESETS["masked-choice"].replace(eval_episodes=100, progress=False, run_dir=str(tmp_path / "run"),
                                           device="cpu", compile_mode="off")
    summary = Trainer(cfg).train()
    # Without memory no policy earns more than memoryless_return() = 0.385 (the cue is gone 8 steps before the
    # query); eager, seeds 1-3 evaluated at 1.0, 0.795, 0.925 (100 episodes). A margin of 0.3 leaves room for noise.
    assert summary["eval_return_mean"] >= memoryless_return() + 0.3, summary
