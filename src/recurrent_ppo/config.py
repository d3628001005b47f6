"""Training configuration: one dataclass, validated before any work starts, plus named presets."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import torch
import tyro

from recurrent_ppo.buffer import check_sequences
from recurrent_ppo.compile import CompileBackend, CompileMode
from recurrent_ppo.envs import ENV_CHOICES, is_env_name
from recurrent_ppo.envs.gym_adapter import PREFIX as GYM_PREFIX
from recurrent_ppo.models.cores import CoreKind, RnnKernel, fused_kernel_error

Precision = Literal["fp32", "tf32", "bf16"]


AUTO_RNN_KERNEL: dict[str, RnnKernel] = {"cpu": "unrolled", "cuda": "unrolled"}
"""What `--rnn-kernel auto` runs on each device type: the kernel measured faster there. The fused scans run on CPU
under the Triton interpreter alone; on CUDA they are unmeasured (bench/gpu_checks.sh rnn measures them), so auto
stays unrolled until a GPU's figures say otherwise."""


@dataclass
class TrainConfig:
    """Recurrent PPO on a vectorized device env. Defaults train stateless-cartpole to ~500 on a 2-core CPU."""

    env: str = "stateless-cartpole"
    """Environment: one of recurrent_ppo.envs.ENVS (on the device); gym:<id> for a gymnasium env (on the host;
    gym:<module>:<id> imports the module that registers it); gym:<module>:<function> for a function returning a
    gymnasium env with its wrappers; <module>:<attr> for a VectorEnv class or factory (num_envs, device) of your own
    (docs/envs.md). Modules import from the current directory too."""
    num_envs: int = 32
    """Parallel environments stepped together."""
    num_steps: int = 128
    """Steps per env in each rollout."""
    total_steps: int = 600_000
    """Total environment steps (all envs) to train for."""
    seed: int = 1
    """Seed of torch's global generators (policy init, sampling, envs)."""
    device: str = "auto"
    """'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N'."""
    run_dir: str = ""
    """Folder for metrics.jsonl and the checkpoint; empty: runs/<env>-s<seed>-<timestamp>."""
    hidden_dim: int = 128
    """Hidden size of the recurrent core (also the encoder width)."""
    num_layers: int = 1
    """Stacked recurrent layers."""
    core: CoreKind = "lstm"
    """Recurrent core: lstm or gru (both our own, resetting the state at episode starts)."""
    skip_core: bool = False
    """Add the encoder's features to the core's output before the heads (a residual connection past the core): the
    heads see the current observation without it passing through the recurrent state."""
    seq_len: int = 16
    """BPTT sequence length; must divide num_steps."""
    learning_rate: float = 2.5e-3
    """Adam learning rate at the start of training."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over training."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    value_lambda: float | None = None
    """GAE lambda of the value targets (A + V) alone; None: gae_lambda, as PPO does. A shorter one for the policy's
    advantages (less variance) with a longer one here keeps the value learning the long return."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide the number of sequences (num_envs * num_steps / seq_len)."""
    update_epochs: int = 4
    """Passes over the rollout per iteration."""
    clip_coef: float = 0.2
    """PPO ratio clipping."""
    clip_vloss: bool = True
    """Clip the value loss around the rollout's values, as PPO2 does."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    recall_coef: float = 0.0
    """Weight of an auxiliary loss that asks the core's output at each step to predict the encoder's features of
    the previous observation (a linear recall head, trained with the policy; 0: no head). It gives memory of the
    last steps a gradient of its own, beside the one reward gives it."""
    normalize_rewards: bool = True
    """Divide rewards by the running std of the discounted return (per env, on the device, as gymnasium's
    NormalizeReward), so value targets stay near unit scale whatever the env's reward scale."""
    normalize_obs: bool = False
    """Standardize every floating-point Box observation (each leaf of a Dict or Tuple too) by its running mean and
    std, updated with every rollout step's observations and clipped to +-10, as gymnasium's NormalizeObservation
    with CleanRL's clip; integer, image, Discrete, MultiDiscrete, MultiBinary and action-mask leaves stay as the
    env gives them. The statistics are checkpointed and applied, frozen, in evaluation."""
    previous_action: bool = False
    """Add the action the env took at the previous step, and a first-step flag, to the observation, as POPGym's
    baselines do (its PreviousAction and Antialias wrappers): the policy then knows what it sampled."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before GAE, after normalization (logged returns stay unscaled)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    compile_mode: Literal["auto", CompileMode] = "auto"
    """torch.compile mode of the rollout step, the update's loss and evaluation: off, default, reduce-overhead
    (adds CUDA graphs on GPU), max-autotune; auto picks per device (see resolved_compile_mode)."""
    compile_backend: CompileBackend = "inductor"
    """torch.compile backend; 'eager' or 'aot_eager' trace with fullgraph=True without generating code."""
    rnn_kernel: Literal["auto", RnnKernel] = "auto"
    """How the core runs the update's sequences: fused (each layer's recurrence in one Triton launch, resets
    inside; needs CUDA), unrolled (one step at a time, the reference), or auto: the one measured faster on the
    device (AUTO_RNN_KERNEL: unrolled on CPU, and on CUDA until a GPU measures fused faster).
    The rollout's one step is the same cell either way; checkpoints load under either."""
    precision: Precision = "fp32"
    """Arithmetic of the run: fp32; tf32 (the process's fp32 GEMMs on TF32 tensor cores, torch's matmul precision
    'high', and the fused scans' too; on CPU it changes nothing); bf16 (the update's forward under bf16 autocast,
    the loss, gradients and Adam in fp32; the rollout stays fp32)."""
    refresh_hidden: bool = False
    """Before each epoch after the first, recompute the stored sequence-start states with the current weights
    (one no-grad forward over the rollout), instead of training every epoch from the rollout's stale states."""
    rollout_graph: bool = False
    """Capture the whole rollout (all num_steps compiled steps) in one CUDA graph after the first, and replay it
    per iteration instead of one replay per step: CUDA and a device env only."""
    env_workers: int | Literal["auto"] = 0
    """Worker processes that step a gymnasium env's copies (gym:...): 0 steps them in the trainer's process, one
    after another; N steps them in N processes (at most one per copy), each its share, in parallel; auto times one
    copy's step against a pipe round trip at start and starts one worker per core where they save more than they
    cost, else none (it is timing-based: pin a number where runs must repeat exactly). Device envs step inside the
    rollout's own graph and take 0 or auto."""
    env_overlap: bool = True
    """With env workers, split the envs into two halves and step one half while the policy acts on the other
    (double buffering), so neither waits for the other. The rollout is the one without overlap, step for step,
    but for two things: each half's sampling draws its own random numbers, the same ones only where they are
    drawn in sequence (the categorical's on the CPU, unless inductor compiles it); with --normalize-obs the
    observations are normalized by the statistics of the step before."""
    checkpoint_every: int = 50
    """Iterations between checkpoints (written atomically over RUN_DIR/checkpoint.pt); 0: only at the end."""
    eval_episodes: int = 100
    """Episodes of the final deterministic evaluation (0 skips it)."""
    progress: bool = True
    """Show progress: a bar on a terminal, a line every --log-every iterations otherwise (a log file)."""
    log_every: int = 10
    """Iterations between progress lines when the output is not a terminal."""
    eval_every: int = 0
    """Iterations between deterministic evaluations logged to metrics.jsonl (eval_return_mean); 0: none."""
    time_budget: float = 0.0
    """Stop cleanly, with a checkpoint, once training has run this many seconds; 0: no budget."""
    target_kl: float | None = None
    """Stop an iteration's updates once a minibatch's approx KL exceeds this (decided on the device); None: off."""
    check_env_outputs: bool = True
    """Stop the run when the env returns a NaN or Inf reward or observation (checked on the device)."""
    overwrite: bool = False
    """Replace the run already in --run-dir instead of refusing to start."""
    preset: Annotated[str, tyro.conf.Suppress] = ""
    """The named preset (PRESETS) these settings started from, recorded in config.json; empty for the defaults or a
    config file. Not a flag of its own: --preset chooses it, and POPGym tasks start from the popgym preset unless
    --preset, --config or --resume chooses otherwise."""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_sequences(self) -> int:
        return self.batch_size // self.seq_len

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device={self.device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device={self.device!r}: recurrent-ppo runs on cpu or cuda; use auto, cpu, cuda or "
                             "cuda:N")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} asked for CUDA, but torch sees no CUDA device; use cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={self.device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        return device

    def resolved_compile_mode(self, device: torch.device) -> str:
        """The compile mode `auto` stands for on `device`: default (inductor) on CPU; reduce-overhead on CUDA, where
        a rollout step is dozens of tiny kernels whose launches cost more than their work, and CUDA graphs remove
        the launches (docs/measurements.md has the speed of each mode)."""
        if self.compile_mode != "auto":
            return self.compile_mode
        return "reduce-overhead" if device.type == "cuda" else "default"

    def resolved_rnn_kernel(self, device: torch.device) -> RnnKernel:
        """The core's kernel on `device`: `auto` is AUTO_RNN_KERNEL's for the device type. `fused` where it cannot
        run raises ValueError saying what to do."""
        if self.rnn_kernel == "auto":
            return AUTO_RNN_KERNEL[device.type]
        if self.rnn_kernel == "fused" and (why := fused_kernel_error(device)) is not None:
            raise ValueError(f"rnn_kernel='fused' cannot run: {why}; use --rnn-kernel unrolled (or auto), or run on "
                             f"CUDA")
        return self.rnn_kernel

    @property
    def matmul_precision(self) -> str:
        """torch.set_float32_matmul_precision for the run: 'high' (TF32) with precision tf32, else 'highest'."""
        return "high" if self.precision == "tf32" else "highest"

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first invalid setting; returns self."""
        hints = get_type_hints(TrainConfig, include_extras=False)
        for field in dataclasses.fields(self):  # a Literal's values, and every type, from the annotations alone
            value = getattr(self, field.name)
            if not matches_type(value, hints[field.name]):
                raise ValueError(f"{field.name}={value!r} must be {type_description(hints[field.name])}")
        if not is_env_name(self.env):
            raise ValueError(f"env={self.env!r} is unknown; choose {ENV_CHOICES}")
        positive = ("num_envs", "num_steps", "total_steps", "hidden_dim", "num_layers", "seq_len",
                    "num_minibatches", "update_epochs", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        check_sequences(self.num_envs, self.num_steps, self.seq_len, self.num_minibatches)
        if self.total_steps < self.batch_size:
            raise ValueError(
                f"total_steps={self.total_steps} is less than one rollout (num_envs * num_steps = {self.batch_size})"
            )
        for name in ("gamma", "gae_lambda", "value_lambda"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "reward_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl={self.target_kl} must be > 0 (or None: no early stop)")
        for name in ("ent_coef", "vf_coef", "recall_coef", "eval_episodes", "checkpoint_every", "eval_every",
                     "time_budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        self._validate_env_workers()
        if self.run_dir and Path(self.run_dir).exists() and not Path(self.run_dir).is_dir():
            raise ValueError(f"run_dir={self.run_dir!r} is a file, not a folder: give a folder for the run")
        device = self.resolved_device()
        self.resolved_rnn_kernel(device)
        if self.rollout_graph and device.type != "cuda":
            raise ValueError(f"rollout_graph needs a CUDA device (the rollout is captured in a CUDA graph), not "
                             f"{device}; leave --rollout-graph off here")
        return self

    def _validate_env_workers(self) -> None:
        workers = self.env_workers
        if workers != "auto" and workers < 0:
            raise ValueError(f"env_workers={workers!r} must be 0 (in-process), a number of worker processes, or "
                             f"'auto'")
        if workers not in (0, "auto") and not self.env.startswith(GYM_PREFIX):
            raise ValueError(f"env_workers={workers} steps a gymnasium env's copies in worker processes, and "
                             f"env={self.env!r} is not one (gym:<id>): a device env steps inside the rollout's own "
                             f"graph, and a VectorEnv of your own steps as it is written; leave env_workers at 0")

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def config_from_dict(values: Mapping[str, Any], source: str, *, ignore: Collection[str] = ()) -> TrainConfig:
    """The TrainConfig that `values` (a config.json's or a checkpoint's saved settings) describe, each value checked
    against its field's type first, as the command line's flags are: a str is never a bool, a bool never a number,
    a float never an int (an int for a float field is taken as that float). Settings left out keep their defaults;
    keys in `ignore` are skipped. Raises ValueError naming `source` (e.g. `--config run/config.json`), the setting,
    the type it needs and the value that came."""
    values = current_settings(values)
    hints = get_type_hints(TrainConfig)
    unknown = sorted(set(values) - hints.keys() - set(ignore))
    if unknown:
        raise ValueError(f"{source}: unknown settings {unknown}")
    typed = {}
    for name, value in values.items():
        if name not in hints:
            continue
        if not matches_type(value, hints[name]):
            raise ValueError(f"{source}: {name} must be {type_description(hints[name])}, got the "
                             f"{type(value).__name__} {value!r}")
        typed[name] = float(value) if hints[name] is float else value
    return TrainConfig(**typed)


def current_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Saved settings (a config.json's, a checkpoint's) in today's names: `matmul_precision` other than "highest"
    (TF32 matmuls) is `precision="tf32"` now, the one precision setting."""
    values = dict(values)
    if values.pop("matmul_precision", "highest") != "highest" and values.get("precision", "fp32") == "fp32":
        values["precision"] = "tf32"
    return values


def matches_type(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint` (a TrainConfig field's: bool, int, float, str, a Literal, an optional),
    strictly: bool is not taken for int, nor int for bool (Python's bool is an int subclass), nor float for int."""
    if get_origin(hint) is Literal:
        return any(type(value) is type(choice) and value == choice for choice in get_args(hint))
    if get_origin(hint) in (Union, types.UnionType):
        return any(matches_type(value, option) for option in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    raise TypeError(f"no type check for the annotation {hint!r}: add one to matches_type")


def type_description(hint: Any) -> str:
    """`hint` in words: `a bool`, `an int`, `one of 'fp32', 'tf32', 'bf16'`, `a float or None`."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in get_args(hint))
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(type_description(option) for option in get_args(hint))
    if hint is type(None):
        return "None"
    return {int: "an int"}.get(hint, f"a {hint.__name__}")


PRESETS: dict[str, TrainConfig] = {
    "stateless-cartpole": TrainConfig(),
    "cartpole": TrainConfig(env="cartpole"),
    "memory": TrainConfig(env="memory", total_steps=300_000),
    # The presets below were measured with the fixed reward scale they name and no reward normalization
    # (figures in docs/measurements.md), so they pin both.
    # Rewards are 0 to 1 per episode; the best memoryless policy earns 0.385 (masked_choice.memoryless_return).
    "masked-choice": TrainConfig(env="masked-choice", normalize_rewards=False, reward_scale=1.0, total_steps=300_000),
    # Pendulum-v1's rewards (-16.3..0 per step) times 0.1 with gamma 0.9 keep value targets within about -16..0;
    # sb3-zoo's Pendulum settings otherwise (lr 1e-3, 10 epochs, no entropy bonus).
    "stateless-pendulum": TrainConfig(env="stateless-pendulum", normalize_rewards=False, reward_scale=0.1,
                                      total_steps=163_840, learning_rate=1e-3, gamma=0.9, ent_coef=0.0,
                                      update_epochs=10, num_minibatches=4),
    # Gymnasium's toy-text and classic-control envs (stepped on the host).
    "gym-cartpole": TrainConfig(env="gym:CartPole-v1", normalize_rewards=False, reward_scale=0.1,
                                total_steps=204_800),
    # Returns of -1, 0 or 1 (FrozenLake: 0 or 1, slippery as gymnasium makes it): no scaling.
    "blackjack": TrainConfig(env="gym:Blackjack-v1", normalize_rewards=False, reward_scale=1.0, total_steps=204_800),
    "frozenlake": TrainConfig(env="gym:FrozenLake-v1", normalize_rewards=False, reward_scale=1.0,
                              total_steps=409_600),
    # Taxi's info action_mask becomes the observation's "action_mask": illegal moves are never sampled.
    "taxi": TrainConfig(env="gym:Taxi-v4", normalize_rewards=False, reward_scale=0.1, total_steps=614_400),
    # Box actions (Gaussian head); short horizon and no entropy bonus, as continuous-control PPO setups use.
    "pendulum": TrainConfig(env="gym:Pendulum-v1", normalize_rewards=False, reward_scale=0.1, total_steps=409_600,
                            learning_rate=1e-3, gamma=0.9, ent_coef=0.0, update_epochs=10),
    # One configuration for every POPGym task, as POPGym trains every task with one (docs/measurements.md has the
    # ablation behind each setting).
    "popgym": TrainConfig(
        env="popgym/RepeatPreviousEasy",
        # POPGym's baselines show the policy its previous action (PreviousAction + Antialias): it more than doubled
        # MineSweeper's and MultiarmedBandit's returns and lifted NoisyPositionOnlyCartPole from 0.85 to 0.98.
        previous_action=True,
        # BPTT over 64 steps, longer than most Easy episodes (POPGym's baselines backpropagate through whole
        # episodes): on top of the previous action it lifted CountRecall from -0.32 to -0.17, Autoencode from -0.45
        # to -0.42 and NoisyPositionOnlyCartPole from 0.981 to 0.992 at 1M steps (2 seeds each). The CPU inductor
        # compile of the update grows with it (146 s at 64 against 58 s at 16), which a run of millions of steps
        # repays; 128 (the whole rollout) measured no better on Autoencode and NoisyPositionOnlyCartPole.
        seq_len=64,
        # Most POPGym tasks pay at the step the memory is used, so a shorter GAE horizon gives less variance for
        # little bias: on top of the two above, 0.9 lifted CountRecall from -0.17 to -0.05 and
        # NoisyPositionOnlyCartPole from 0.992 to 0.995 at 1M steps (2 seeds each); 0.8 helped CountRecall more
        # but cost the CartPole task, whose reward is survival over hundreds of steps.
        gae_lambda=0.9,
    ),
}
FAMILY_PRESETS = {"popgym/": "popgym"}
"""The preset an env name's prefix starts from when no --preset, --config or --resume chooses one."""
