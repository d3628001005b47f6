"""EpisodeTracker keeps exactly the last `window` finished episodes, without host syncs in update()."""

import random

import torch

from recurrent_ppo.episodes import EpisodeTracker


def test_tracker_matches_a_python_record():
    rng = random.Random(0)
    num_envs, window = 7, 10
    tracker = EpisodeTracker(num_envs, torch.device("cpu"), window=window)
    running = [0.0] * num_envs
    lengths = [0] * num_envs
    finished = []
    assert tracker.summary()["episodes"] == 0
    for step in range(300):
        rewards = [float(rng.randint(0, 3)) for _ in range(num_envs)]
        # Sometimes more envs finish in one step than the window holds.
        done = [rng.random() < (0.9 if step % 50 == 0 else 0.2) for _ in range(num_envs)]
        tracker.update(torch.tensor(rewards), torch.tensor(done))
        for i in range(num_envs):
            running[i] += rewards[i]
            lengths[i] += 1
            if done[i]:
                finished.append((running[i], lengths[i]))
                running[i], lengths[i] = 0.0, 0
        summary = tracker.summary()
        recent = finished[-window:]
        assert summary["episodes"] == len(finished)
        if recent:
            assert abs(summary["episode_return_mean"] - sum(r for r, _ in recent) / len(recent)) < 1e-4
            assert abs(summary["episode_length_mean"] - sum(n for _, n in recent) / len(recent)) < 1e-9


def test_window_larger_than_one_step_of_finishes():
    tracker = EpisodeTracker(3, torch.device("cpu"), window=2)
    tracker.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, True, True]))
    assert tracker.summary()["episode_return_mean"] == 2.5  # the newest two, in env order
