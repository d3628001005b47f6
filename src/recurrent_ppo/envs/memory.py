"""A memory task for many envs at once on the device: remember a cue over a delay, then answer with it.

Each episode shows one of `num_cues` cues (one-hot) at its first step, then `delay` blank observations, then a
query flag. Answering the query with the cue's action earns 1 and ends the episode; every other step earns 0 and
ignores the action. Only memory wins: a memoryless policy answers at random and earns 1 / num_cues on average.
Cues come from torch's global generator, so the step stays free of host synchronisation and traceable.
"""

from __future__ import annotations

import torch

from recurrent_ppo.envs.base import StepResult
from recurrent_ppo.spaces import Box, Discrete


class CueMemory:
    """`num_envs` copies; observation `[one-hot cue (num_cues), query flag]`, `num_cues` actions.

    An episode lasts `delay + 1` steps; for the trainer's truncated BPTT to learn it, `delay` should be under
    `seq_len` so that cue and query often fall in one training sequence.
    """

    steps_on_host = False

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", *, num_cues: int = 4,
                 delay: int = 8) -> None:
        if num_envs < 1 or num_cues < 2 or delay < 1:
            raise ValueError(f"CueMemory needs num_envs >= 1, num_cues >= 2 and delay >= 1, "
                             f"got {num_envs}, {num_cues}, {delay}")
        self.num_envs, self.num_cues, self.delay = num_envs, num_cues, delay
        self.device = torch.device(device)
        self.observation_space = Box((num_cues + 1,), 0.0, 1.0)
        self.action_space = Discrete(num_cues)
        self.max_episode_steps = delay + 1  # episodes end (terminated) at this length: none is ever truncated
        self.cue = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # [N]
        self.elapsed = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # [N] steps taken this episode

    def _observe(self, cue: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        shown = torch.nn.functional.one_hot(cue, self.num_cues).float() * (elapsed == 0)[:, None]
        return torch.cat([shown, (elapsed == self.delay).float()[:, None]], dim=1)

    def reset(self) -> torch.Tensor:
        self.cue.random_(0, self.num_cues)
        self.elapsed.zero_()
        return self._observe(self.cue, self.elapsed)

    def step(self, actions: torch.Tensor) -> StepResult:
        query = self.elapsed == self.delay  # this step answers, and ends the episode
        reward = (query & (actions == self.cue)).float()
        elapsed = self.elapsed + 1
        final_obs = self._observe(self.cue, elapsed)  # past the query: blank
        self.cue.copy_(torch.where(query, torch.randint_like(self.cue, self.num_cues), self.cue))
        self.elapsed.copy_(torch.where(query, 0, elapsed))
        return StepResult(self._observe(self.cue, self.elapsed), reward, query, torch.zeros_like(query), final_obs)
