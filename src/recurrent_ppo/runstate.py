"""A run's state in one place: what a checkpoint holds, captured from a Trainer's parts and restored into them;
the checkpoint format's version and the old names it maps; the settings a resumed run may change.

A checkpoint holds everything the next iteration reads: weights, optimizer, the torch generators, the device env's
state, the rollout's carry (observations, recurrent state, episode starts), the episode statistics, the reward and
observation normalizers' statistics, step and iteration counts. From it a single-process run on device envs goes
on exactly as the uninterrupted run would. A host (gymnasium) env cannot be snapshotted, so it is reseeded from
the seed and the iteration and starts fresh episodes; data-parallel runs keep rank 0's state only, so every
process reseeds the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from recurrent_ppo import spaces
from recurrent_ppo.snapshot import load_tensors, rng_state, save_tensors, set_rng_state

Trainer = Any
"""A `trainer.Trainer` (not imported: the trainer imports this module, and checkpoint.py, which it imports, too)."""

FORMAT = 4
"""The checkpoint format `capture` writes. 0: the first (one LSTM policy described by `policy_args`); 1: the
policy spec, without a "format" key; 2: the same keys as 1, with "format"; 3: the policy spec with
"skip_core"; 4: the policy spec with "recall"."""

RESUMABLE = ("total_steps", "checkpoint_every", "eval_episodes", "progress", "device", "compile_mode",
             "compile_backend", "rnn_kernel", "precision", "log_every", "eval_every", "time_budget",
             "check_env_outputs", "rollout_graph", "env_workers", "env_overlap")
"""The settings a resumed run may change: how long it runs and how, never what it trains (env, sizes, PPO)."""


def resumable_flags() -> str:
    """RESUMABLE as the flags that set them, for help texts: "--total-steps, ... and --env-overlap"."""
    flags = [f"--{name.replace('_', '-')}" for name in RESUMABLE]
    return f"{', '.join(flags[:-1])} and {flags[-1]}"


POLICY_ARGS_NAMES = {"actor.": "head.linear.", "lstm.": "core."}
"""Parameter prefixes of format-0 checkpoints, and what they are called now."""


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of any earlier format in the current one. Format 0 held one kind of policy, an LSTM over flat
    Box observations with Discrete actions, described by `policy_args` (obs_dim, num_actions, hidden_dim,
    num_layers) with parameters under actor.* and lstm.*: its policy_args become a policy spec and its parameters
    take the current names. Format 1 differs from 2 by the missing "format" key alone; formats before 3 built no
    policy with `skip_core`, nor formats before 4 one with a recall head, which their specs lack. The saved
    configuration's own old names are the config's to map (`config.current_settings`), as config files hold them
    too."""
    if "policy_args" in state and "policy_spec" not in state:
        args = state["policy_args"]
        spec = {"obs_space": spaces.to_data(spaces.Box((args["obs_dim"],))),
                "action_space": spaces.to_data(spaces.Discrete(args["num_actions"])),
                "hidden_dim": args["hidden_dim"], "num_layers": args["num_layers"], "core": "lstm"}

        def renamed(key: str) -> str:
            for old, new in POLICY_ARGS_NAMES.items():
                if key.startswith(old):
                    return new + key[len(old):]
            return key

        state = {**state, "policy": {renamed(key): value for key, value in state["policy"].items()},
                 "policy_spec": spec}
    if "policy_spec" in state:
        state = {**state, "policy_spec": {"skip_core": False, "recall": False, **state["policy_spec"]}}
    return {**state, "format": FORMAT}


def capture(trainer: Trainer, iteration: int, elapsed: float, fresh_episodes: str | None = None) -> dict[str, Any]:
    """The checkpoint of `trainer` after `iteration` iterations (`elapsed` seconds of training). With
    `fresh_episodes` (why, in words) it holds weights, optimizer, counts and normalizers only, and resumes with
    fresh episodes, reseeded: for a state whose env, carry and generators have moved past `iteration`."""
    collector = trainer.collector
    state = {"format": FORMAT, "policy": trainer.policy.state_dict(), "policy_spec": trainer.policy_spec,
             "optimizer": trainer.optimizer.state_dict(), "config": dataclasses.asdict(trainer.cfg),
             "global_step": trainer.global_step, "iteration": iteration, "time": elapsed}
    if fresh_episodes is None:
        state.update(rng=rng_state(trainer.device), episodes=save_tensors(trainer.episodes))
        if not collector.env.steps_on_host:
            state.update(env=save_tensors(collector.env), carry=save_tensors(collector.carry()))
    else:
        state["fresh_episodes"] = fresh_episodes
    for name, normalizer in (("reward_norm", collector.reward_norm), ("obs_norm", collector.obs_norm)):
        if normalizer is not None:
            state[name] = save_tensors(normalizer)
    return state


@dataclasses.dataclass(frozen=True)
class Resumed:
    """Where a restored run stands."""

    iteration: int  # iterations completed
    global_step: int
    elapsed: float  # seconds of training before the resumed process
    exactly: bool  # the envs, the carry and the random streams were restored: the run goes on as if uninterrupted
    fresh_episodes: str | None  # why the checkpoint restarts episodes, when it says


def restore(trainer: Trainer, state: dict[str, Any]) -> Resumed:
    """Load the checkpoint `state` (`checkpoint.read_checkpoint`) into `trainer`'s parts. Raises ValueError when
    it does not fit the run: another policy, no iterations left, missing observation statistics."""
    if state["policy_spec"] != trainer.policy_spec:
        raise ValueError(f"the checkpoint's policy {state['policy_spec']} does not match this run's "
                         f"{trainer.policy_spec}")
    global_step = state["global_step"]
    iteration = state.get("iteration", global_step // trainer.steps_per_iteration)
    if iteration >= trainer.num_iterations:
        raise ValueError(f"the run already trained {global_step:,} of total_steps={trainer.cfg.total_steps:,}; "
                         f"give a larger total_steps to continue it")
    trainer.policy.load_state_dict(state["policy"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    for group in trainer.optimizer.param_groups:  # loading replaced the lr tensor that annealing updates in place
        group["lr"] = trainer.lr
    collector = trainer.collector
    if collector.reward_norm is not None and "reward_norm" in state:
        load_tensors(collector.reward_norm, state["reward_norm"], "reward normalizer")
    if collector.obs_norm is not None:  # before restart(), whose reset observations it normalizes
        if "obs_norm" not in state:
            raise ValueError("the run normalizes observations (normalize_obs), but its checkpoint holds no "
                             "observation statistics to go on with")
        load_tensors(collector.obs_norm, state["obs_norm"], "observation normalizer")
    exact = "rng" in state and not trainer.group.parallel
    if exact:
        load_tensors(trainer.episodes, state["episodes"], "episode statistics")
        if not collector.env.steps_on_host:
            load_tensors(collector.env, state["env"], "env state")
            load_tensors(collector.carry(), state["carry"], "rollout carry")
    if collector.env.steps_on_host or not exact:
        torch.manual_seed(trainer.cfg.seed + trainer.group.rank + 1_000_003 * iteration)
        collector.restart()  # fresh episodes from the reseeded generator
    if exact:
        set_rng_state(state["rng"], trainer.device)
    return Resumed(iteration, global_step, float(state.get("time", 0.0)), exact and not collector.env.steps_on_host,
                   state.get("fresh_episodes"))
