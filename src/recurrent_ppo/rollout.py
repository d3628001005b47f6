"""Rollout collection and evaluation: the policy steps device envs, one compiled step per env step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from recurrent_ppo import spaces
from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.compile import compile_fn, compile_parts, cuda_graph_step_begin, mark_static_state, uses_cuda_graphs
from recurrent_ppo.envs import GymVectorEnv, PreviousAction, StepResult, VectorEnv
from recurrent_ppo.envs.gym_adapter import HostEnvPart
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.finite import EnvOutputWatch
from recurrent_ppo.normalize import ObservationNormalizer, RewardNormalizer
from recurrent_ppo.models.cores import RecurrentState, reset_state
from recurrent_ppo.models.policy import ActionOutput, RecurrentPolicy
from recurrent_ppo.spaces import Obs

if TYPE_CHECKING:
    from recurrent_ppo.config import TrainConfig


def carry_over(carry: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...]) -> None:
    """Copy a step's outputs into the carry tensors the next step reads."""
    torch._foreach_copy_(list(carry), list(new))


def check_env_matches(policy: RecurrentPolicy, env: VectorEnv) -> None:
    """Raise ValueError unless `env`'s spaces are the ones `policy` was built for."""
    pairs = (("observation_space", policy.obs_space, env.observation_space),
             ("action_space", policy.action_space, env.action_space))
    for kind, ours, theirs in pairs:
        if ours != theirs:
            raise ValueError(f"the policy was built for the {kind} {ours}, but the env has {theirs}")


def mask_error(policy: RecurrentPolicy) -> RuntimeError:
    return RuntimeError(f"an observation's {spaces.ACTION_MASK} allowed no action (every flag false"
                        f"{', in some sub-action' if isinstance(policy.action_space, spaces.MultiDiscrete) else ''}); "
                        f"the env must leave at least one legal action for {policy.action_space}")


def check_rollout_graph(env: VectorEnv, compile_mode: str) -> None:
    """Raise ValueError unless the whole rollout can be one CUDA graph: a CUDA device env, steps compiled without
    CUDA graphs of their own (the whole rollout is captured in one, replayed once per rollout)."""
    if env.device.type != "cuda":
        raise ValueError(f"rollout_graph captures the rollout in a CUDA graph and needs a CUDA device, not "
                         f"{env.device}; leave it off on this device")
    if env.steps_on_host:
        raise ValueError(f"rollout_graph needs an env that steps on the device; {type(env).__name__} steps on the "
                         f"host, which a CUDA graph cannot replay; leave it off for this env")
    if compile_mode == "off":
        raise ValueError("rollout_graph captures the compiled steps; it needs a compile mode other than off")
    if uses_cuda_graphs(compile_mode, env.device):
        raise ValueError(f"rollout_graph captures the steps in one CUDA graph of its own; compile them without "
                         f"CUDA graphs (mode default, not {compile_mode})")


@dataclass(frozen=True)
class RolloutSettings:
    """What a rollout does with the env's outputs beside storing them, and how it runs."""

    reward_scale: float = 1.0
    normalize_rewards: float | None = None
    """The discount whose return's std scales the rewards (RewardNormalizer), or None: rewards as they come."""
    normalize_obs: bool = False
    check_env_outputs: bool = True
    rollout_graph: bool = False

    @classmethod
    def of(cls, cfg: TrainConfig) -> RolloutSettings:
        return cls(cfg.reward_scale, cfg.gamma if cfg.normalize_rewards else None, cfg.normalize_obs,
                   cfg.check_env_outputs, cfg.rollout_graph)


class RolloutCollector:
    """Fills a RolloutBuffer with `num_steps` steps of all envs, carrying obs and recurrent state across rollouts.

    Rollouts run under `torch.inference_mode()`: it was faster than `no_grad` for an eager CPU step
    (docs/measurements.md), and it gives the rollout one kind of tensor throughout, so the compiled step is never
    re-traced for a normal/inference mix. Everything the step makes is an inference tensor; the buffer copies
    values out of them.

    With `rollout_graph` (CUDA, a device env) the first rollout runs step by step and is then captured whole in
    one CUDA graph, which every later rollout replays: one launch for all `num_steps` steps.
    """

    def __init__(self, policy: RecurrentPolicy, env: VectorEnv, buffer: RolloutBuffer, episodes: EpisodeTracker,
                 settings: RolloutSettings = RolloutSettings(), *, compile_mode: str = "off",
                 compile_backend: str = "inductor") -> None:
        self.policy, self.env, self.buffer, self.episodes = policy, env, buffer, episodes
        self.reward_scale = settings.reward_scale
        self.reward_norm = (None if settings.normalize_rewards is None
                            else RewardNormalizer(env.num_envs, settings.normalize_rewards, env.device))
        # Observations are normalized as the env hands them over, before the policy reads them and the buffer
        # stores them, as gymnasium's NormalizeObservation wraps an env: the policy acts on, the buffer trains on
        # and the truncation bootstrap values the same normalized observations, and the carry holds them.
        self.obs_norm = ObservationNormalizer(env.observation_space, env.device) if settings.normalize_obs else None
        self.device = env.device
        check_env_matches(policy, env)
        if settings.rollout_graph:
            check_rollout_graph(env, compile_mode)
        self.compile_mode = compile_mode
        self.capture_after_first = settings.rollout_graph
        self.captured_rollout: torch.cuda.CUDAGraph | None = None  # the whole rollout, with rollout_graph
        # What one step hands the next (obs, recurrent state, episode starts) lives in these tensors, overwritten
        # in place after every step. Under CUDA graphs a step's outputs are overwritten by the next replay, so they
        # cannot be fed back as inputs; carry tensors at fixed addresses can, without copies into the graph.
        with torch.inference_mode():
            self.obs = env.reset()
            spaces.check_obs(env.observation_space, self.obs, f"{type(env).__name__}.reset()")
            self.obs = self._normalized(self.obs)
            self.hidden = policy.initial_hidden(env.num_envs)
            self.episode_starts = torch.ones(env.num_envs, dtype=torch.bool, device=self.device)
        self.truncation_overflow = torch.zeros((), dtype=torch.bool, device=self.device)
        self.no_legal_action = torch.zeros((), dtype=torch.bool, device=self.device)  # set by a mask of no action
        # The env outputs that can go NaN or Inf: the reward and every floating-point observation leaf.
        self.float_leaves = [index for index, leaf in enumerate(spaces.leaves(env.observation_space).values())
                             if spaces.storage(leaf)[1].is_floating_point]
        paths = list(spaces.leaves(env.observation_space))
        fields = ("reward", *(f"observation {paths[i]}".rstrip() for i in self.float_leaves))
        self.watch = EnvOutputWatch(fields, self.device) if settings.check_env_outputs else None
        if uses_cuda_graphs(compile_mode, self.device):
            mark_static_state(env, episodes, buffer, self)
        self.step, (self.act, self.record) = compile_parts(self._step, (self._act, self._record), env.steps_on_host,
                                                           compile_mode, compile_backend)
        self.last_value = compile_fn(policy.get_value, compile_mode, compile_backend)

    def _step(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor):
        """Policy step, env step, truncation bootstrap, episode bookkeeping, the buffer write and the carry for all
        envs. Through a device env, everything a rollout step does runs on the device: compiled it is one graph
        (one CUDA-graph replay) with nothing left for the host to launch."""
        hidden_in, act, env_action = self.act(obs, hidden, episode_starts)
        result = self.env.step(env_action)
        self.record(obs, hidden, episode_starts, hidden_in, act, result)

    def _act(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor):
        hidden_in = reset_state(hidden, episode_starts)  # the buffer stores the state fed into the step
        no_legal = self.policy.no_legal_action(obs)
        if no_legal is not None:
            self.no_legal_action |= no_legal.any()
        act = self.policy.get_action(obs, hidden_in, episode_starts)
        return hidden_in, act, self.policy.env_action(act.action)

    def _normalized(self, obs: Obs, update: bool = True) -> Obs:
        """`obs` as the policy sees it: normalized (merged into the statistics first, with `update`) when the
        collector normalizes observations, else as it is."""
        return obs if self.obs_norm is None else self.obs_norm(obs, update)

    def _record(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor, hidden_in: RecurrentState,
                act: ActionOutput, result: StepResult) -> None:
        """A step's results into the rollout, in order: the NaN watch, the episode statistics, the observations and
        rewards as training sees them, the buffer write, the carry the next step reads."""
        self._watch_outputs(result)
        done = result.terminated | result.truncated
        self.episodes.update(result.reward, done)
        next_obs, final_obs = self._observations(result)
        self.buffer.write(obs=obs, actions=act.action, log_probs=act.log_prob, values=act.value,
                          rewards=self._rewards(result), terminated=result.terminated, truncated=result.truncated,
                          episode_starts=episode_starts, hidden=hidden_in, final_obs=final_obs)
        carry_over((*spaces.obs_tensors(obs), *hidden, episode_starts),
                   (*spaces.obs_tensors(next_obs), *act.hidden, done))

    def _watch_outputs(self, result: StepResult) -> None:
        """Flag a NaN or Inf reward or float observation (read once per iteration, `check`)."""
        if self.watch is not None:  # the observation after the step and the reset one: a sum is finite iff both are
            after, fresh = spaces.obs_tensors(result.final_obs), spaces.obs_tensors(result.obs)
            self.watch.record(self.buffer.step_index,
                              (result.reward, *(after[i] + fresh[i] for i in self.float_leaves)))

    def _observations(self, result: StepResult) -> tuple[Obs, Obs]:
        """The returned and the final observations as the policy sees them. As gymnasium's wrapper over a
        same-step-autoreset vector env: the returned ones (reset ones where an episode ended) update the
        statistics; the final ones are normalized by them, without an update."""
        return self._normalized(result.obs), self._normalized(result.final_obs, update=False)

    def _rewards(self, result: StepResult) -> torch.Tensor:
        """The rewards GAE reads: normalized (updating the statistics), then scaled."""
        rewards = result.reward if self.reward_norm is None else self.reward_norm(result.reward, result.terminated,
                                                                                  result.truncated)
        return rewards * self.reward_scale

    @torch.inference_mode()
    def collect(self) -> torch.Tensor:
        """Run one rollout into the buffer; returns V(obs after the last step) `[num_envs]` for GAE."""
        self.buffer.reset()
        if self.watch is not None:
            self.watch.reset()
        if self.captured_rollout is not None:
            self.captured_rollout.replay()
            self.buffer.pos = self.buffer.num_steps
        else:
            for _ in range(self.buffer.num_steps):
                self.advance()
            if self.capture_after_first:  # the steps are compiled and warm now: capture them for the next rollouts
                self.captured_rollout = self.capture_rollout()
        self._bootstrap_truncations()
        cuda_graph_step_begin(self.compile_mode, self.device)
        return self.last_value(self.obs, self.hidden, self.episode_starts).clone()

    def capture_rollout(self) -> torch.cuda.CUDAGraph:
        """Record `num_steps` compiled steps in one CUDA graph. Capturing runs nothing: the buffer, the env and the
        carry are as they were, and each replay of the graph is one rollout. Every step reads and writes tensors
        at fixed addresses (the carry, the buffer at its device-side step index, the env's state, the weights,
        which the optimizer and checkpoint loads update in place), so a replay sees their current values."""
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph):
            for _ in range(self.buffer.num_steps):
                self.step(self.obs, self.hidden, self.episode_starts)
        return graph

    def _bootstrap_truncations(self) -> None:
        """Fill `truncated_values` where the rollout truncated (`RolloutBuffer.bootstrap_truncations`); more
        truncations than the buffer's rows set `truncation_overflow`."""
        read_count = self.env.steps_on_host or self.device.type == "cpu"
        self.truncation_overflow |= self.buffer.bootstrap_truncations(self.policy.value_after_step,
                                                                      read_count=read_count)

    def check(self, iteration: int = -1) -> None:
        """Raise if the env returned a NaN or Inf during the rollout (NonFiniteError naming field, env, step and
        `iteration`), met an action mask with no legal action, or truncated more episodes than the env's
        `max_episode_steps` allows. One host read of every flag: call it where the host waits for the device
        anyway."""
        flags = [self.truncation_overflow.reshape(1), self.no_legal_action.reshape(1)]
        if self.watch is not None:
            flags.append(self.watch.first.reshape(-1))
        overflow, no_legal, *first = torch.cat([flag.to(torch.int64) for flag in flags]).tolist()
        if self.watch is not None:  # env outputs first: the likeliest cause of what follows
            self.watch.report([first[i:i + 2] for i in range(0, len(first), 2)], iteration)
        if no_legal:
            raise mask_error(self.policy)
        if overflow:
            raise RuntimeError(f"the env truncated more than {self.buffer.final_rows} episodes in a rollout, more than "
                               f"max_episode_steps={self.env.max_episode_steps} allows for "
                               f"{self.buffer.num_envs} envs x {self.buffer.num_steps} steps; some truncations "
                               f"were not bootstrapped. Set the env's max_episode_steps to None if it truncates "
                               f"before its limit")


    def carry(self) -> dict[str, object]:
        """What one rollout hands the next: the observation, the recurrent state, the episode starts."""
        return {"obs": self.obs, "hidden": self.hidden, "episode_starts": self.episode_starts}

    @torch.inference_mode()
    def restart(self) -> None:
        """Start fresh episodes: reset the env, zero the recurrent state, mark every env as starting. The reset
        observations are normalized and update the statistics, as a first reset does. The episodes that were
        running are abandoned: their partial returns count neither toward the episode statistics nor toward the
        reward normalizer's running returns."""
        carry_over((*spaces.obs_tensors(self.obs), *self.hidden),
                   (*spaces.obs_tensors(self._normalized(self.env.reset())),
                    *self.policy.initial_hidden(self.env.num_envs)))
        self.episode_starts.fill_(True)
        self.episodes.abandon_running()
        if self.reward_norm is not None:
            self.reward_norm.returns.zero_()

    def advance(self) -> None:
        """One step of all envs, written to the buffer at its next position; call under inference mode."""
        self.buffer.claim_step()
        cuda_graph_step_begin(self.compile_mode, self.device)
        self.step(self.obs, self.hidden, self.episode_starts)


class StepInputs(NamedTuple):
    """What the policy reads at one step, for all envs: the observation, the recurrent state, the episode starts."""

    obs: Obs  # [N, ...] per leaf
    hidden: RecurrentState  # each [num_layers, N, H]
    starts: torch.Tensor  # [N] bool


def host_parts(env: VectorEnv) -> list[tuple[HostEnvPart, VectorEnv]] | None:
    """For a gymnasium env whose copies step in workers laid out in two or more parts: each part to send steps to,
    beside the env the rollout steps it as (the part, or PreviousAction around it where the env is wrapped so).
    None for any other env."""
    inner = env.env if isinstance(env, PreviousAction) else env
    if not isinstance(inner, GymVectorEnv) or inner.num_parts < 2:
        return None
    parts = [inner.part(index) for index in range(inner.num_parts)]
    return [(part, part if inner is env else PreviousAction(part)) for part in parts]


def rows(obs: Obs, span: slice) -> Obs:
    return spaces.map_obs(lambda x: x[span], obs)


def cat_results(results: list[StepResult]) -> StepResult:
    """The step results of consecutive parts of the envs as one result of all of them."""
    def cat_obs(parts: list[Obs]) -> Obs:
        if isinstance(parts[0], dict):
            return {path: torch.cat([part[path] for part in parts]) for path in parts[0]}
        return torch.cat(parts)

    return StepResult(cat_obs([r.obs for r in results]), torch.cat([r.reward for r in results]),
                      torch.cat([r.terminated for r in results]), torch.cat([r.truncated for r in results]),
                      cat_obs([r.final_obs for r in results]))


class OverlappedRolloutCollector(RolloutCollector):
    """A RolloutCollector for a gymnasium env whose copies step in worker processes, in two halves (`host_parts`):
    while one half's copies step, the policy acts on the other half, so neither the policy nor the workers wait
    for each other (double buffering, as EnvPool's async mode).

    At step t each half acts on its rows of the step's inputs and sends its actions. When a half's results come
    in, its rows of step t+1's inputs are made from them and it acts again at once. When both halves are in, the
    collector's own `_record` runs over all envs, as without overlap: the buffer write, the episode statistics,
    the normalizers, the truncation bootstrap and the carry, in env order. A half acts for step t+1 before step t
    is recorded, so the inputs and the policy's outputs are kept twice, by the step's parity.

    So the rollout is the non-overlapped one, value for value, where the policy's rows do not depend on how many
    rows it runs at once, with two exceptions. Each half's sampling draws its own random numbers: the same ones
    where the generator fills in sequence (the categorical's exponential noise on the CPU, eager or aot_eager);
    elsewhere (Gaussian noise, CUDA, inductor's own random numbers) other draws of the same distribution. With
    observation normalization a half acts on its observations normalized by the statistics before the step that
    returned them (the other half's results of that step are not in yet); the statistics themselves merge whole
    steps, as without overlap.
    """

    def __init__(self, policy: RecurrentPolicy, env: VectorEnv, buffer: RolloutBuffer, episodes: EpisodeTracker,
                 settings: RolloutSettings = RolloutSettings(), **kwargs) -> None:
        parts = host_parts(env)
        if parts is None:
            raise ValueError(f"overlapping the rollout needs a gymnasium env whose copies step in workers in two "
                             f"parts (env_workers > 0, env_overlap on, 2 or more envs); {type(env).__name__} is not "
                             f"one")
        super().__init__(policy, env, buffer, episodes, settings, **kwargs)
        self.parts = parts
        self.spans = [slice(part.copies.start, part.copies.stop) for part, _ in parts]
        self.sent: list[torch.Tensor | None] = [None] * len(parts)  # each part's actions in flight
        self.results: list[StepResult | None] = [None] * len(parts)
        with torch.inference_mode():
            # Step t reads inputs[t % 2]; inputs[0] is the collector's carry, which a rollout starts and ends in.
            self.inputs = (StepInputs(self.obs, self.hidden, self.episode_starts),
                           StepInputs(spaces.map_obs(torch.clone, self.obs), tuple(h.clone() for h in self.hidden),
                                      self.episode_starts.clone()))
        self.staged: list[tuple[RecurrentState, ActionOutput] | None] = [None, None]  # (hidden_in, act) by parity
        if uses_cuda_graphs(self.compile_mode, self.device):
            mark_static_state(self.inputs[1])

    def advance(self) -> None:
        """Step t of the rollout (t: the steps written so far): wait for each half's step t, making its inputs of
        step t+1 and acting on them at once, then record step t for all envs. Step 0's actions go out first."""
        t, last = self.buffer.pos, self.buffer.num_steps - 1
        if t == 0:
            for index in range(len(self.parts)):
                self._act_part(index, 0)
        self.buffer.claim_step()
        for index, (_, stepped) in enumerate(self.parts):
            self.results[index] = stepped.step(self.sent[index])
            if t < last:
                self._next_inputs(index, t)
                self._act_part(index, t + 1)
        self._record_step(t)
        if t == last and t % 2:  # the rollout ends in inputs[1]: the carry is inputs[0]
            carry_over(self._flat(self.inputs[0]), self._flat(self.inputs[1]))

    @staticmethod
    def _flat(inputs: StepInputs) -> tuple[torch.Tensor, ...]:
        return (*spaces.obs_tensors(inputs.obs), *inputs.hidden, inputs.starts)

    def _act_part(self, index: int, t: int) -> None:
        """The policy on part `index`'s rows of step t's inputs; its outputs kept for the record, its actions sent."""
        span, inputs = self.spans[index], self.inputs[t % 2]
        cuda_graph_step_begin(self.compile_mode, self.device)
        hidden_in, act, env_action = self.act(rows(inputs.obs, span), tuple(h[:, span] for h in inputs.hidden),
                                               inputs.starts[span])
        staged_in, staged = self._staged(t % 2, hidden_in, act)
        for whole, part in ((staged.action, act.action), (staged.log_prob, act.log_prob), (staged.value, act.value)):
            whole[span] = part
        for whole, part in zip((*staged_in, *staged.hidden), (*hidden_in, *act.hidden)):
            whole[:, span] = part
        self.sent[index] = env_action.clone()  # a CUDA graph's replay would overwrite its output
        self.parts[index][0].send(self.sent[index])

    def _staged(self, parity: int, hidden_in: RecurrentState, act: ActionOutput):
        """The policy's outputs of all envs for steps of `parity`, allocated at the first act like `act`'s."""
        if self.staged[parity] is None:
            n = self.env.num_envs

            def whole(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
                shape = list(x.shape)
                shape[dim] = n
                return torch.zeros(shape, dtype=x.dtype, device=x.device)

            self.staged[parity] = (tuple(whole(h, 1) for h in hidden_in),
                                   ActionOutput(whole(act.action), whole(act.log_prob), whole(act.value),
                                                tuple(whole(h, 1) for h in act.hidden)))
            if uses_cuda_graphs(self.compile_mode, self.device):
                mark_static_state(self.staged[parity])
        return self.staged[parity]

    def _next_inputs(self, index: int, t: int) -> None:
        """Part `index`'s rows of step t+1's inputs, from its step t: the returned observation (normalized by the
        statistics as they stand), the state after the step, the episode starts."""
        result, span = self.results[index], self.spans[index]
        inputs, (_, act) = self.inputs[(t + 1) % 2], self.staged[t % 2]
        carry_over((*(x[span] for x in spaces.obs_tensors(inputs.obs)), *(h[:, span] for h in inputs.hidden),
                    inputs.starts[span]),
                   (*spaces.obs_tensors(self._normalized(result.obs, update=False)),
                    *(h[:, span] for h in act.hidden), result.terminated | result.truncated))

    def _record_step(self, t: int) -> None:
        """Step t of all envs into the buffer and the bookkeeping (the collector's `_record`); its carry goes to
        inputs[t % 2], which the next step does not read."""
        inputs, (hidden_in, act) = self.inputs[t % 2], self.staged[t % 2]
        cuda_graph_step_begin(self.compile_mode, self.device)
        self.record(inputs.obs, inputs.hidden, inputs.starts, hidden_in, act, cat_results(self.results))


class Evaluator:
    """Mean return of fresh episodes under the deterministic policy (or, with `deterministic=False`, the sampling
    policy that training runs), on an env of its own.

    `obs_norm`: the training run's observation normalizer, for a policy trained on normalized observations;
    evaluation applies its statistics frozen (never updates them), as the run's checkpoint holds them."""

    def __init__(self, policy: RecurrentPolicy, env: VectorEnv, *, compile_mode: str = "off",
                 compile_backend: str = "inductor", obs_norm: ObservationNormalizer | None = None,
                 deterministic: bool = True) -> None:
        check_env_matches(policy, env)
        self.policy, self.env, self.obs_norm = policy, env, obs_norm
        self.deterministic = deterministic
        self.compile_mode = compile_mode
        # Step-to-step carry in place, as in RolloutCollector (CUDA graphs overwrite a step's outputs).
        with torch.inference_mode():
            # Each round starts with a reset, copied in here.
            self.obs = spaces.zeros(env.observation_space, (env.num_envs,), env.device)
            self.hidden = policy.initial_hidden(env.num_envs)
            self.episode_starts = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
        if uses_cuda_graphs(compile_mode, env.device):
            mark_static_state(env, self)
        self.step, (self.act,) = compile_parts(self._step, (self._act,), env.steps_on_host, compile_mode,
                                               compile_backend)

    def _step(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor):
        act, env_action = self.act(obs, hidden, episode_starts)
        result = self.env.step(env_action)
        return result.obs, act.hidden, result.terminated | result.truncated, result.reward

    def _act(self, obs: Obs, hidden: RecurrentState, episode_starts: torch.Tensor):
        # Frozen statistics give the same result wherever they are applied: here, in the part that is compiled for
        # host envs too, so the carry keeps the env's own observations.
        if self.obs_norm is not None:
            obs = self.obs_norm(obs, update=False)
        act = self.policy.get_action(obs, hidden, episode_starts, deterministic=self.deterministic)
        return act, self.policy.env_action(act.action)

    def evaluate(self, num_episodes: int, max_steps: int = 100_000) -> float:
        """The mean return of `num_episodes` fresh episodes (`episode_returns`)."""
        return float(self.episode_returns(num_episodes, max_steps).mean())

    @torch.inference_mode()
    def episode_returns(self, num_episodes: int, max_steps: int = 100_000) -> torch.Tensor:
        """Run rounds of `env.num_envs` fresh episodes (one each per env) until `num_episodes` have finished;
        the returns of the first `num_episodes`, `[num_episodes]`. Reads the device every 64 steps only."""
        n, device = self.env.num_envs, self.env.device
        obs, hidden, starts = self.obs, self.hidden, self.episode_starts
        returns = []
        while len(returns) * n < num_episodes:
            carry_over((*spaces.obs_tensors(obs), *hidden),
                       (*spaces.obs_tensors(self.env.reset()), *self.policy.initial_hidden(n)))
            starts.fill_(True)
            running = torch.zeros(n, device=device)
            finished = torch.zeros(n, dtype=torch.bool, device=device)
            for step in range(1, max_steps + 1):
                cuda_graph_step_begin(self.compile_mode, device)
                next_obs, next_hidden, done, reward = self.step(obs, hidden, starts)
                running += reward * ~finished
                finished |= done
                carry_over((*spaces.obs_tensors(obs), *hidden, starts),
                           (*spaces.obs_tensors(next_obs), *next_hidden, done))
                if step % 64 == 0 and bool(finished.all()):
                    break
            else:
                raise RuntimeError(f"evaluation: {int((~finished).sum())} of {n} episodes still running after "
                                   f"{max_steps} steps")
            returns.append(running)
        return torch.cat(returns)[:num_episodes]
