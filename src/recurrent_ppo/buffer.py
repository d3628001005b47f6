"""Static-shape rollout storage, preallocated once on the device, env-major `[num_envs, num_steps, ...]`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch

from recurrent_ppo import spaces
from recurrent_ppo.kernels.gae import gae
from recurrent_ppo.models.cores import CORES, CoreKind, RecurrentState
from recurrent_ppo.spaces import ActionSpace, Obs, Space

if TYPE_CHECKING:
    from recurrent_ppo.models.policy import RecurrentPolicy


class SequenceBatch(NamedTuple):
    """A minibatch of `B` whole sequences of `L` steps, each field `[B, L, ...]` but `hidden`."""

    obs: Obs  # [B, L, ...] per leaf
    actions: torch.Tensor  # [B, L, *action_shape]
    episode_starts: torch.Tensor  # [B, L] bool
    log_probs: torch.Tensor  # [B, L]
    values: torch.Tensor  # [B, L]
    advantages: torch.Tensor  # [B, L]
    hidden: RecurrentState  # the state fed into each sequence's first step, each [num_layers, B, H]
    value_advantages: torch.Tensor | None = None  # [B, L]: GAE at the value targets' own lambda, where it differs

    @property
    def returns(self) -> torch.Tensor:
        """The value targets, A + V: formed where the loss reads both (fused into its graph when compiled), so
        GAE writes advantages alone and no minibatch gathers a returns tensor. A is GAE at the value targets'
        lambda where `compute_advantages` was given one of their own."""
        return (self.advantages if self.value_advantages is None else self.value_advantages) + self.values


class RolloutBuffer:
    """One rollout of `num_steps` steps for `num_envs` envs; every tensor is allocated here, once.

    Step t holds: `obs[:, t]` the observation the policy saw (a tensor, or a `{path: tensor}` dict, each leaf in
    the dtype and shape the env produced it), `actions`/`log_probs`/`values` the policy's outputs,
    `rewards`/`terminated`/`truncated` what the env returned for that action, `truncated_values[:, t]`
    V(final observation) of an episode cut by the time limit at t (filled after the rollout, read only where
    `truncated`), `episode_starts[:, t]` whether obs t begins an episode, and `hidden_h`/`hidden_c[:, t]` (the
    LSTM's; the GRU's `hidden_h` alone; each `[num_envs, num_steps, num_layers, hidden_dim]`) the state fed INTO
    step t, after the reset.

    The final observations of truncated episodes, which the bootstrap values, are kept compactly: `final_rows`
    rows (`truncation_rows`: as many as `max_episode_steps` allows truncations in a rollout), filled in the order
    the truncations come, each with its env and step (`final_env`, `final_step`), `final_count` of them so far.

    Writes copy values into these preallocated normal tensors, so inference-mode tensors from the rollout
    (e.g. `initial_hidden()`) come out of the buffer as normal tensors that autograd can use.
    """

    def __init__(
        self,
        num_envs: int,
        num_steps: int,
        obs_space: Space,
        action_space: ActionSpace,
        num_layers: int,
        hidden_dim: int,
        device: torch.device | str,
        *,
        core: CoreKind = "lstm",
        max_episode_steps: int | None = None,
    ) -> None:
        if min(num_envs, num_steps, num_layers, hidden_dim) < 1:
            raise ValueError(f"RolloutBuffer sizes must be positive, got {num_envs=}, {num_steps=}, {num_layers=}, "
                             f"{hidden_dim=}")
        self.num_envs, self.num_steps = num_envs, num_steps
        self.device = torch.device(device)
        n, t = num_envs, num_steps

        def alloc(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=self.device)

        action_shape, action_dtype = spaces.action_storage(action_space)
        self.obs = spaces.zeros(obs_space, (n, t), self.device)  # each leaf in its own dtype and shape
        self.actions = alloc(n, t, *action_shape, dtype=action_dtype)
        self.log_probs = alloc(n, t)
        self.values = alloc(n, t)
        self.rewards = alloc(n, t)
        self.terminated = alloc(n, t, dtype=torch.bool)
        self.truncated = alloc(n, t, dtype=torch.bool)
        self._allocate_truncations(obs_space, max_episode_steps)
        self.episode_starts = alloc(n, t, dtype=torch.bool)
        # One tensor per state tensor of the core: hidden_h, hidden_c (LSTM) or hidden_h (GRU).
        self.hidden_names = tuple(f"hidden_{name}" for name in CORES[core].state_names)
        for name in self.hidden_names:
            setattr(self, name, alloc(n, t, num_layers, hidden_dim))
        self.advantages = alloc(n, t)  # returns are advantages + values: SequenceBatch.returns
        # GAE at the value targets' own lambda; allocated by the first compute_advantages that is given one.
        self.value_advantages: torch.Tensor | None = None
        self.pos = 0
        # The step `write` fills, on the device: a compiled (CUDA-graphed) rollout step writes the buffer without
        # the host, which keeps its own count in `pos`.
        self.step_index = alloc(1, dtype=torch.int64)

    def _allocate_truncations(self, obs_space: Space, max_episode_steps: int | None) -> None:
        """The truncation bootstrap's storage: the final observations of truncated envs, compactly, with each
        one's env and step, and the values they get."""
        n, t, device = self.num_envs, self.num_steps, self.device
        # One slot past the [N, T] values takes the bootstrap's rows that hold no truncation of this rollout.
        self.truncated_value_slots = torch.zeros(n * t + 1, device=device)
        self.truncated_values = self.truncated_value_slots[:n * t].view(n, t)
        self.final_rows = truncation_rows(n, t, max_episode_steps)
        # Row final_rows is spare: every env not truncated at a step writes there, and truncations past the rows.
        self.final_obs = spaces.zeros(obs_space, (self.final_rows + 1,), device)
        self.final_env = torch.zeros(self.final_rows + 1, dtype=torch.int64, device=device)
        self.final_step = torch.zeros(self.final_rows + 1, dtype=torch.int64, device=device)
        self.final_count = torch.zeros(1, dtype=torch.int64, device=device)
        self.env_ids = torch.arange(n, device=device)

    @classmethod
    def for_policy(cls, policy: RecurrentPolicy, num_envs: int, num_steps: int, device: torch.device | str,
                   max_episode_steps: int | None = None) -> RolloutBuffer:
        """A buffer shaped for `policy`'s spaces and core, and for an env of `max_episode_steps`."""
        return cls(num_envs, num_steps, policy.obs_space, policy.action_space, policy.num_layers, policy.hidden_dim,
                   device, core=policy.core_kind, max_episode_steps=max_episode_steps)

    @property
    def hidden(self) -> RecurrentState:
        """The stored states, one `[num_envs, num_steps, num_layers, hidden_dim]` tensor per state tensor."""
        return tuple(getattr(self, name) for name in self.hidden_names)

    # The policy holds a state as `[num_layers, B, hidden_dim]` (nn.LSTM's layout); the buffer stores it per env and
    # step. These two are the only places one layout turns into the other.
    def state_at(self, envs: torch.Tensor | slice, steps: torch.Tensor | int) -> RecurrentState:
        """The stored state fed into step `steps` of env `envs` (index tensors, or a slice and a step), in the
        policy's layout, each `[num_layers, B, hidden_dim]`."""
        return tuple(part[envs, steps].transpose(0, 1).contiguous() for part in self.hidden)

    def state_columns(self, state: RecurrentState) -> tuple[torch.Tensor, ...]:
        """`state` (the policy's layout, `[num_layers, num_envs, hidden_dim]` each) as one step of the buffer's
        columns, `[num_envs, num_layers, hidden_dim]` each."""
        return tuple(part.transpose(0, 1) for part in state)

    def reset(self) -> None:
        """Start a new rollout; the old contents are overwritten step by step."""
        self.pos = 0
        self.step_index.zero_()
        self.final_count.zero_()

    @property
    def full(self) -> bool:
        return self.pos == self.num_steps

    def add(self, **step: torch.Tensor | Obs | RecurrentState) -> None:
        """Write step `pos` for all envs at once; the fields are `write`'s: each `[num_envs, ...]`, and `hidden`
        the state fed into this step (after its reset), each `[num_layers, num_envs, hidden_dim]`.

        Every write is one copy into a preallocated slice: no per-env loop, no host synchronisation.
        """
        self.claim_step()
        self.write(**step)

    def claim_step(self) -> None:
        """Count the next step on the host, refusing a step past the end; `write` then fills it."""
        if self.pos >= self.num_steps:
            raise RuntimeError(f"RolloutBuffer is full ({self.num_steps} steps): call reset() before the next rollout")
        self.pos += 1

    def write(
        self,
        *,
        obs: Obs,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        episode_starts: torch.Tensor,
        hidden: RecurrentState,
        final_obs: Obs,
    ) -> None:
        """`add` without the host: writes at the device-side `step_index` and advances it, touching no Python
        state, so a compiled step can call it (the rollout's does, and calls `claim_step` outside). `final_obs` is
        the env's final observation of every env; those of the truncated ones are kept."""
        index = self.step_index
        fields = (*obs_pairs(self.obs, obs), (self.actions, actions), (self.log_probs, log_probs),
                  (self.values, values), (self.rewards, rewards), (self.terminated, terminated),
                  (self.truncated, truncated), (self.episode_starts, episode_starts),
                  *zip(self.hidden, self.state_columns(hidden)))
        for stored, step in fields:
            if step.dtype != stored.dtype:  # e.g. float masks into the bool ones
                step = step.to(stored.dtype)
            stored.index_copy_(1, index, step.unsqueeze(1))
        self._keep_final(final_obs, truncated.to(torch.bool))
        index.add_(1)

    def _keep_final(self, final_obs: Obs, truncated: torch.Tensor) -> None:
        """The final observations of the envs `truncated [N]` at this step, with their env and step, into the next
        free rows; every other env's, and truncations past the rows, go to the spare row."""
        slot = torch.where(truncated, self.final_count + truncated.cumsum(0) - 1, self.final_rows)
        slot = slot.clamp(max=self.final_rows)
        for stored, step in obs_pairs(self.final_obs, final_obs):
            stored.index_copy_(0, slot, step.to(stored.dtype))
        self.final_env.index_copy_(0, slot, self.env_ids)
        self.final_step.index_copy_(0, slot, self.step_index.expand(self.num_envs))
        self.final_count.add_(truncated.sum())

    def bootstrap_truncations(self, value_after_step: Callable[..., torch.Tensor], *,
                              read_count: bool = False) -> torch.Tensor:
        """Fill `truncated_values` where the rollout truncated: V(final obs) from the state after that step, by
        `value_after_step(obs, hidden, episode_starts, final_obs)` (`RecurrentPolicy.value_after_step`) over all
        `final_rows` kept rows at once: static shapes, nothing waits for the device; rows this rollout did not fill
        land in the spare slot. Returns whether the env truncated more often than the rows hold (a 0-dim bool
        on the device). One batched pass over the rollout's truncations, instead of a second policy pass in every
        step for the few envs that truncated. With `read_count` (where the host reads the device for free: a CPU
        device, or an env stepping on the host, which waits for every step anyway) only the filled rows are
        valued, none when nothing truncated."""
        overflow = (self.final_count > self.final_rows).reshape(())
        rows = min(int(self.final_count), self.final_rows) if read_count else self.final_rows
        if rows == 0:
            return overflow
        envs, steps = self.final_env[:rows], self.final_step[:rows]
        filled = torch.arange(rows, device=self.device) < self.final_count
        hidden = self.state_at(envs, steps)
        obs = spaces.map_obs(lambda x: x[envs, steps], self.obs)

        def final(path: str, leaf: torch.Tensor) -> torch.Tensor:  # rows not filled: a stored obs, a valid one
            kept = self.final_obs[path] if path else self.final_obs
            return torch.where(filled.reshape(-1, *(1,) * (leaf.dim() - 1)), kept[:rows], leaf)

        final_obs = {path: final(path, x) for path, x in obs.items()} if isinstance(obs, dict) else final("", obs)
        values = value_after_step(obs, hidden, self.episode_starts[envs, steps], final_obs)
        slots = torch.where(filled, envs * self.num_steps + steps, self.num_envs * self.num_steps)
        self.truncated_value_slots.index_copy_(0, slots, values.to(self.truncated_value_slots.dtype))
        return overflow

    def compute_advantages(self, last_values: torch.Tensor, gamma: float, gae_lambda: float,
                           value_lambda: float | None = None) -> None:
        """Fill `advantages` by GAE; `last_values [num_envs]` = V(obs after the last step). With a `value_lambda`
        other than `gae_lambda`, also `value_advantages`, GAE at that lambda, which the value targets use."""
        if not self.full:
            raise RuntimeError(f"compute_advantages needs a full rollout: {self.pos} of {self.num_steps} steps written")

        def estimate(lam: float, out: torch.Tensor) -> None:
            gae(rewards=self.rewards, values=self.values, terminated=self.terminated, truncated=self.truncated,
                truncated_values=self.truncated_values, last_values=last_values, gamma=gamma, lam=lam,
                out=(out, None), returns=False)

        estimate(gae_lambda, self.advantages)
        if value_lambda is None or value_lambda == gae_lambda:
            self.value_advantages = None
            return
        if self.value_advantages is None:
            self.value_advantages = torch.zeros_like(self.advantages)
        estimate(value_lambda, self.value_advantages)

    def get_batched_sequences(
        self, seq_len: int, num_minibatches: int, generator: torch.Generator | None = None
    ) -> Iterator[SequenceBatch]:
        """Yield `num_minibatches` minibatches of whole `seq_len`-step sequences in random order.

        The rollout of each env is cut into `num_steps // seq_len` consecutive sequences; every minibatch holds
        `num_envs * num_steps // seq_len // num_minibatches` of them, so every minibatch has the same shape.
        """
        check_sequences(self.num_envs, self.num_steps, seq_len, num_minibatches)
        num_seqs = self.num_envs * (self.num_steps // seq_len)

        def seqs(x: torch.Tensor) -> torch.Tensor:  # [N, T, ...] -> [S, L, ...]
            return x.reshape(num_seqs, seq_len, *x.shape[2:])

        obs = spaces.map_obs(seqs, self.obs)
        fields = (seqs(self.actions), seqs(self.episode_starts), seqs(self.log_probs), seqs(self.values),
                  seqs(self.advantages))
        value_advantages = None if self.value_advantages is None else seqs(self.value_advantages)
        chunks = self.num_steps // seq_len  # sequence s is env s // chunks from step (s % chunks) * seq_len
        order = torch.randperm(num_seqs, device=self.device, generator=generator)
        for idx in order.view(num_minibatches, -1):
            hidden = self.state_at(idx // chunks, (idx % chunks) * seq_len)
            yield SequenceBatch(spaces.map_obs(lambda x: x[idx], obs), *(f[idx] for f in fields), hidden,
                                None if value_advantages is None else value_advantages[idx])


def truncation_rows(num_envs: int, num_steps: int, max_episode_steps: int | None) -> int:
    """The most truncations a rollout of `num_envs` x `num_steps` can hold: ceil(num_steps / limit) per env under a
    time limit, every step without one."""
    per_env = num_steps if max_episode_steps is None else min(num_steps, -(-num_steps // max_episode_steps))
    return num_envs * per_env


def check_sequences(num_envs: int, num_steps: int, seq_len: int, num_minibatches: int = 1) -> None:
    """Raise ValueError unless a rollout of `num_envs` x `num_steps` cuts into whole `seq_len`-step sequences that
    `num_minibatches` equal minibatches share: the one statement of the rule, which the config checks early."""
    if seq_len < 1 or num_steps % seq_len:
        raise ValueError(f"seq_len={seq_len} must divide num_steps={num_steps}")
    num_seqs = num_envs * (num_steps // seq_len)
    if num_minibatches < 1 or num_seqs % num_minibatches:
        raise ValueError(f"num_minibatches={num_minibatches} must divide the {num_seqs} sequences (num_envs * "
                         f"num_steps / seq_len = {num_envs} * {num_steps} / {seq_len})")


def obs_pairs(stored: Obs, step: Obs | None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(stored leaf, step leaf) for every leaf of an observation; the step's are None where `step` is."""
    if not isinstance(stored, dict):
        return [(stored, step)]
    return [(tensor, None if step is None else step[path]) for path, tensor in stored.items()]
