"""A masked memory task for many envs at once on the device: multi-part actions, legal options drawn every step.

Each episode shows a cue `(c_1, ..., c_K)`, `c_i` in `[0, nvec[i])` (one-hot per part), at its first step, then
blank observations, then a query flag at step `delay`. The action is a MultiDiscrete `(a_1, ..., a_K)`. At every
step each part has a fresh random set of legal options, shown as the observation's `"action_mask"` (true where
legal, for the action chosen from that observation): one anchor option, a second one drawn uniformly from the
others, and each remaining option independently with probability `legal_prob`. At the query the anchor is the
cue's value (so the right answer is always legal); elsewhere it is uniform, so masks say nothing of the cue.

The reward of a step is the mean over parts of 1 for `a_i == c_i` at the query, -`illegal_penalty` for an illegal
`a_i` at any step, 0 otherwise; the query ends the episode. A policy that remembers the cue earns 1 per episode.
A memoryless one sees at the query only the masks, and given a part's legal set L every member of L is equally
likely to be the cue (the chance of drawing L is the same whichever member is the anchor), so its best is a
legal pick, right with chance 1/|L|: `memoryless_return`. Cue and masks come from torch's global generator, drawn
with static shapes (random bits, the anchor and the second option scattered in), so the step stays free of host
synchronisation and traceable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.spaces import ACTION_MASK, Box, Dict, MultiBinary, MultiDiscrete

NVEC = (3, 4)
DELAY = 8
LEGAL_PROB = 0.5


def memoryless_return(nvec: Sequence[int] = NVEC, legal_prob: float = LEGAL_PROB) -> float:
    """The best expected episode return of a policy without memory: the mean over parts of E[1 / |L_i|], where
    |L_i| = 2 + Binomial(nvec[i] - 2, legal_prob) is the number of legal options at the query."""
    total = 0.0
    for n in nvec:
        extra = n - 2
        total += sum(math.comb(extra, j) * legal_prob**j * (1 - legal_prob) ** (extra - j) / (2 + j)
                     for j in range(extra + 1))
    return total / len(nvec)


class MaskedChoice:
    """`num_envs` copies; observation `{"obs": [one-hot cue per part (sum(nvec)), query flag], "action_mask":
    [sum(nvec)] bool}`, action `MultiDiscrete(nvec)`.

    An episode lasts `delay + 1` steps; for the trainer's truncated BPTT to learn it, `delay` should be under
    `seq_len` so that cue and query often fall in one training sequence.
    """

    steps_on_host = False

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, nvec: Sequence[int] = NVEC,
                 delay: int = DELAY, legal_prob: float = LEGAL_PROB, illegal_penalty: float = 1.0) -> None:
        nvec = tuple(int(n) for n in nvec)
        if num_envs < 1 or not nvec or min(nvec) < 2 or delay < 1:
            raise ValueError(f"MaskedChoice needs num_envs >= 1, a non-empty nvec with every entry >= 2 (two legal "
                             f"options per part) and delay >= 1, got {num_envs}, {nvec}, {delay}")
        if not 0.0 <= legal_prob <= 1.0 or illegal_penalty < 0:
            raise ValueError(f"MaskedChoice needs legal_prob in [0, 1] and illegal_penalty >= 0, "
                             f"got {legal_prob}, {illegal_penalty}")
        self.num_envs, self.nvec, self.delay = num_envs, nvec, delay
        self.legal_prob, self.illegal_penalty = legal_prob, illegal_penalty
        self.device = torch.device(device)
        self.mask_dim = sum(nvec)
        self.observation_space = Dict((("obs", Box((self.mask_dim + 1,), 0.0, 1.0)),
                                       (ACTION_MASK, MultiBinary((self.mask_dim,)))))
        self.action_space = MultiDiscrete(nvec)
        self.max_episode_steps = delay + 1  # episodes end (terminated) at this length: none is ever truncated
        starts = [sum(nvec[:i]) for i in range(len(nvec))]
        self.offsets = torch.tensor(starts, device=self.device)  # [K] where each part starts in the flat mask
        self.sizes = torch.tensor(nvec, device=self.device)  # [K]
        self.cue = torch.zeros(num_envs, len(nvec), dtype=torch.int64, device=self.device)  # [N, K]
        self.elapsed = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # [N] steps taken this episode
        self.mask = torch.ones(num_envs, self.mask_dim, dtype=torch.bool, device=self.device)  # [N, sum(nvec)]

    def memoryless_return(self) -> float:
        """The best expected episode return without memory (a memory policy earns 1)."""
        return memoryless_return(self.nvec, self.legal_prob)

    def _uniform(self, low: int | torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """`[N, K]` integers uniform in `[low, high)` per part (static shapes, no per-part calls)."""
        return low + (torch.rand(self.num_envs, len(self.nvec), device=self.device) * (high - low)).long()

    def _draw_mask(self, elapsed: torch.Tensor, cue: torch.Tensor) -> torch.Tensor:
        """Legal options for the action taken at `elapsed`: the anchor (the cue at the query, else uniform), a
        second option uniform among the others, and each remaining one with probability `legal_prob`."""
        anchor = torch.where((elapsed == self.delay)[:, None], cue, self._uniform(0, self.sizes))
        second = (anchor + self._uniform(1, self.sizes)) % self.sizes
        bits = torch.rand(self.num_envs, self.mask_dim, device=self.device) < self.legal_prob
        forced = torch.cat([anchor, second], dim=1) + self.offsets.repeat(2)
        return bits.scatter(1, forced, True)

    def _observe(self, cue: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        shown = torch.zeros(self.num_envs, self.mask_dim, device=self.device).scatter(1, cue + self.offsets, 1.0)
        return torch.cat([shown * (elapsed == 0)[:, None], (elapsed == self.delay).float()[:, None]], dim=1)

    def reset(self) -> dict[str, torch.Tensor]:
        self.cue.copy_(self._uniform(0, self.sizes))
        self.elapsed.zero_()
        self.mask.copy_(self._draw_mask(self.elapsed, self.cue))
        return {"obs": self._observe(self.cue, self.elapsed), ACTION_MASK: self.mask.clone()}

    def step(self, actions: torch.Tensor) -> StepResult:
        query = self.elapsed == self.delay  # this step answers, and ends the episode
        illegal = ~self.mask.gather(1, actions + self.offsets)  # [N, K]
        score = (query[:, None] & (actions == self.cue)).float() - self.illegal_penalty * illegal.float()
        reward = score.mean(1)
        elapsed = self.elapsed + 1
        cue = torch.where(query[:, None], self._uniform(0, self.sizes), self.cue)
        elapsed_next = torch.where(query, 0, elapsed)
        mask = self._draw_mask(elapsed_next, cue)
        # Past the query no action follows: the final observation is blank and allows every option.
        final_obs = {"obs": self._observe(self.cue, elapsed), ACTION_MASK: mask | query[:, None]}
        self.cue.copy_(cue)
        self.elapsed.copy_(elapsed_next)
        self.mask.copy_(mask)
        obs = {"obs": self._observe(cue, elapsed_next), ACTION_MASK: mask}
        return StepResult(obs, reward, query, torch.zeros_like(query), final_obs)
