"""POPGym's published scores, the bar the benchmark reports each port against.

From the appendix of Morad et al., "POPGym: Benchmarking Partially Observable Reinforcement Learning" (ICLR 2023):
the MMER (the maximum over training of the mean episodic return) of RLlib's PPO with each of the 13 memory models,
the mean of 3 trials of 15M steps, with the previous action in the observation. The figures are as transcribed for
this project; the stored copies of the paper reachable here end before its appendix, so they are unchecked against
it. The ports follow today's popgym: its CountRecall has one more card count in the action space than the paper's,
and its MineSweeper another step limit, so those rows compare like with nearly like. popgym also changed
CountRecall's reward between the paper's submission and its arXiv version (commit 7c9043c, "Make count recall
harder"); which of the two rewards the paper's figure used is not known here.
"""

from __future__ import annotations

from typing import NamedTuple


class PublishedScore(NamedTuple):
    """One task's published MMER: PPO with a GRU, and the best of the 13 models with its name."""

    ppo_gru: float
    best: float
    best_model: str


PUBLISHED: dict[str, PublishedScore] = {
    "popgym/AutoencodeEasy": PublishedScore(-0.283, -0.283, "GRU"),
    "popgym/CountRecallEasy": PublishedScore(0.177, 0.509, "LSTM"),
    "popgym/HigherLowerEasy": PublishedScore(0.529, 0.529, "GRU"),
    "popgym/MultiarmedBanditEasy": PublishedScore(0.619, 0.631, "Elman"),
    "popgym/NoisyPositionOnlyCartPoleEasy": PublishedScore(0.995, 0.995, "GRU"),
    "popgym/RepeatFirstEasy": PublishedScore(1.000, 1.000, "GRU"),
    "popgym/RepeatPreviousEasy": PublishedScore(1.000, 1.000, "GRU"),
    "popgym/PositionOnlyCartPoleEasy": PublishedScore(1.000, 1.000, "GRU"),  # the paper's StatelessCartPole
}
"""Published MMER by port name, where the paper states it."""

CHANGED_SINCE = {
    "popgym/CountRecallEasy": "popgym has since added a card count to the action space (and changed the reward "
                               "around the paper's time)",
}
"""Ports whose task has changed in popgym since the paper, and how."""
