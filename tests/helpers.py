"""Shared test helpers."""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch._dynamo

from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.envs.base import StepResult


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, **tolerances) -> None:
    """torch.testing.assert_close, with the name of the tensor that differs in the message."""
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{name} differs: {m}", **tolerances)


class RandomEnv:
    """A device env of any spaces, for tests: random observations of every leaf (masks with at least one legal
    action per sub-action), rewards that depend on the action, episodes that end at random (p=0.2 per step).
    It counts actions taken against the mask it showed (`illegal_taken`); `empty_mask_at` makes env 0's mask
    all false at that step."""

    steps_on_host = False
    max_episode_steps = None

    def __init__(self, num_envs, observation_space, action_space, device="cpu", *, empty_mask_at=None):
        from recurrent_ppo import spaces

        self.spaces = spaces
        self.num_envs, self.device = num_envs, torch.device(device)
        self.observation_space, self.action_space = observation_space, action_space
        self.leaves = spaces.leaves(observation_space)
        self.empty_mask_at = empty_mask_at
        self.steps = 0
        self.illegal_taken = torch.zeros((), dtype=torch.int64, device=self.device)
        self.mask = None if spaces.ACTION_MASK not in self.leaves else self._random_mask()

    def _random_mask(self) -> torch.Tensor:
        sizes = [self.action_space.n] if isinstance(self.action_space, self.spaces.Discrete) else self.action_space.nvec
        mask = torch.rand(self.num_envs, sum(sizes), device=self.device) < 0.4
        offset = 0
        for size in sizes:  # one forced legal action per sub-action
            forced = offset + torch.randint(0, size, (self.num_envs, 1), device=self.device)
            mask.scatter_(1, forced, True)
            offset += size
        return mask

    def _leaf(self, leaf):
        n, spaces = (self.num_envs,), self.spaces
        shape, dtype = spaces.storage(leaf)
        if isinstance(leaf, spaces.Discrete):
            return torch.randint(leaf.start, leaf.start + leaf.n, n, device=self.device)
        if isinstance(leaf, spaces.MultiDiscrete):
            high = torch.tensor(leaf.nvec, device=self.device)
            return (torch.rand(*n, len(leaf.nvec), device=self.device) * high).long()
        if isinstance(leaf, spaces.MultiBinary):
            return torch.rand(*n, *shape, device=self.device) < 0.5
        if dtype.is_floating_point:
            return torch.randn(*n, *shape, device=self.device)
        return torch.randint(0, 256, (*n, *shape), dtype=dtype, device=self.device)

    def _observe(self):
        obs = {}
        for path, leaf in self.leaves.items():
            obs[path] = self.mask if path == self.spaces.ACTION_MASK else self._leaf(leaf)
        return obs[""] if "" in obs else obs

    def reset(self):
        return self._observe()

    def step(self, actions):
        if self.mask is not None:
            self._count_illegal(actions)
            self.mask = self._random_mask()
            if self.empty_mask_at is not None:  # a Python counter: only in eager tests
                self.steps += 1
                if self.steps == self.empty_mask_at:
                    self.mask[0] = False
        reward = -actions.float().reshape(self.num_envs, -1).square().mean(-1)  # [N]
        terminated = torch.rand(self.num_envs, device=self.device) < 0.2
        final_obs = self._observe()
        return StepResult(self._observe(), reward, terminated, torch.zeros_like(terminated), final_obs)

    def _count_illegal(self, actions):
        if isinstance(self.action_space, self.spaces.Discrete):
            taken = self.mask.gather(1, (actions - self.action_space.start)[:, None])
        else:
            offsets = torch.tensor([sum(self.action_space.nvec[:k]) for k in range(len(self.action_space.nvec))],
                                   device=self.device)
            start = torch.tensor(self.action_space.start or [0] * len(offsets), device=self.device)
            taken = self.mask.gather(1, actions - start + offsets)
        self.illegal_taken += (~taken).sum()


def compiled_matches_eager(make_env, actions, check):
    """Step an eager env and a `torch.compile(fullgraph=True)` one (aot_eager) from the same seeds with the same
    actions; `check(eager_result, compiled_result, t)` compares them."""
    torch._dynamo.reset()
    eager, compiled = make_env(), make_env()
    torch.manual_seed(0)
    eager.reset()
    torch.manual_seed(0)
    compiled.reset()
    step = torch.compile(compiled.step, fullgraph=True, backend="aot_eager")
    for t, action in enumerate(actions):
        torch.manual_seed(100 + t)
        expected = eager.step(action)
        torch.manual_seed(100 + t)
        check(expected, step(action), t)
    torch._dynamo.reset()


TINY = ["--env", "cartpole", "--num-envs", "4", "--num-steps", "16", "--seq-len", "4", "--num-minibatches", "2",
        "--update-epochs", "2", "--hidden-dim", "8", "--device", "cpu", "--eval-episodes", "2"]

TIMING = ("sps", "sps_overall", "time")

"""Record fields that measure the machine, not the run."""

def train_process(run_dir: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "recurrent_ppo", "train", *TINY, "--run-dir", str(run_dir),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, iteration: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        path = run_dir / "checkpoint.pt"
        if path.exists():
            try:
                if read_checkpoint(path)["iteration"] >= iteration:
                    return
            except ValueError:  # caught mid-rename: try again
                pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of iteration {iteration} within {timeout} s")
