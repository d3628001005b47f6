"""Episode returns and lengths tracked on the device, read once per iteration."""

from __future__ import annotations

from collections.abc import Callable

import torch


class EpisodeTracker:
    """Running return/length per env, and the last `window` finished episodes in a ring, without host syncs.

    Envs that finish in the same step are numbered in env order; only the newest `window` of all finished
    episodes are kept, so the ring always holds exactly the most recent ones.
    """

    def __init__(self, num_envs: int, device: torch.device, window: int = 100) -> None:
        self.window = window
        self.running_return = torch.zeros(num_envs, device=device)
        self.running_length = torch.zeros(num_envs, dtype=torch.int64, device=device)
        # One slot past the window takes the writes of envs that did not finish (scatter needs a target).
        self.recent_returns = torch.zeros(window + 1, device=device)
        self.recent_lengths = torch.zeros(window + 1, dtype=torch.int64, device=device)
        self.finished = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, rewards: torch.Tensor, done: torch.Tensor) -> None:
        """Add one step's `rewards [N]`; `done [N]` marks episodes that ended with this step."""
        self.running_return += rewards
        self.running_length += 1
        number = self.finished + torch.cumsum(done, 0) - 1  # [N] global index of each finished episode
        total = self.finished + done.sum()
        keep = done & (number >= total - self.window)
        slot = torch.where(keep, number % self.window, self.window)
        self.recent_returns.scatter_(0, slot, self.running_return)
        self.recent_lengths.scatter_(0, slot, self.running_length)
        self.finished.copy_(total)
        self.running_return.masked_fill_(done, 0.0)
        self.running_length.masked_fill_(done, 0)

    def abandon_running(self) -> None:
        """Forget the episodes running now (their envs start afresh): they are never counted."""
        self.running_return.zero_()
        self.running_length.zero_()

    def summary(self, combine: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Mean return and length of the last `window` finished episodes (NaN before any); one host read.

        `combine` may map the float64 stats `[finished, counted, return sum, length sum]` first, e.g. to sum them
        over data-parallel processes, whose means then weigh each process by its counted episodes."""
        count = self.finished.clamp(max=self.window)
        filled = (torch.arange(self.window, device=count.device) < count).double()
        stats = torch.stack([self.finished.double(), count.double(), (self.recent_returns[:-1].double() * filled).sum(),
                             (self.recent_lengths[:-1].double() * filled).sum()])
        finished, counted, return_sum, length_sum = (combine(stats) if combine else stats).tolist()
        nan = float("nan")
        return {"episodes": int(finished), "episode_return_mean": return_sum / counted if counted else nan,
                "episode_length_mean": length_sum / counted if counted else nan}
