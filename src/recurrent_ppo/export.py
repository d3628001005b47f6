"""A trained policy's step as one module of tensors, and that step exported: a `torch.export` program (.pt2) and,
with the `onnx` extra, an ONNX file.

`PolicyStep` is what `Agent.act` runs and what `recurrent-ppo export` writes: `(obs, state, episode_start) ->
(action, state)` for a batch of envs, deterministic, with the run's observation statistics applied frozen and the
previous action (a run with `previous_action`) carried in the state, so a deployment needs no recurrent-ppo code:

    step = torch.export.load("agent.pt2").module()
    action, state = step(obs, state, episode_start)

`load_exported` adds the metadata written beside the program (the shapes and dtypes of every input and output)
and the initial state.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recurrent_ppo import spaces
from recurrent_ppo.checkpoint import obs_normalizer_from_checkpoint, policy_from_checkpoint, read_checkpoint
from recurrent_ppo.envs.previous_action import IS_FIRST, PREVIOUS_ACTION, null_action
from recurrent_ppo.models.policy import RecurrentPolicy
from recurrent_ppo.normalize import ObservationNormalizer
from recurrent_ppo.spaces import ACTION_MASK, Obs

PROGRAM_FILE = "agent.pt2"
"""Where `recurrent-ppo export RUN` writes the program, in the run folder, unless told otherwise."""
METADATA_FILE = "recurrent_ppo.json"
"""The name of the metadata saved inside the .pt2 archive (`torch.export.save`'s extra_files)."""
ONNX_EXTRA = "pip install 'recurrent-ppo[onnx]' (onnx and onnxscript, which torch.onnx.export needs)"


def step_observation_space(policy_space: spaces.Space, previous_action: bool) -> spaces.Space:
    """The observation a step takes: the policy's, less the previous-action leaves the step adds itself."""
    if not previous_action:
        return policy_space
    return spaces.Dict(tuple((key, sub) for key, sub in policy_space.spaces if key not in (PREVIOUS_ACTION, IS_FIRST)))


class PolicyStep(nn.Module):
    """One step of a trained policy for a batch of N envs, in the env's terms.

    `obs`: the env's observation, `[N, ...]` per leaf of `obs_space` (a tensor for a leaf space, else a flat
    `{path: tensor}` dict, the action mask under `"action_mask"` for a masked policy), each leaf in its storage
    dtype (`spaces.storage`). `state`: the tensors named `state_names`, from `initial_state` or the previous
    step. `episode_start [N]` bool: where true the env's episode begins with `obs`, and the recurrent state (and
    the previous action) start afresh. Returns the env's action `[N, *action shape]` (`policy.env_action`: a
    Discrete's start added, a Box action clipped to its bounds) and the next state.
    """

    def __init__(self, policy: RecurrentPolicy, obs_norm: ObservationNormalizer | None = None,
                 previous_action: bool = False) -> None:
        super().__init__()
        self.policy, self.obs_norm, self.previous_action = policy, obs_norm, previous_action
        self.obs_space = step_observation_space(policy.obs_space, previous_action)
        self.num_hidden = len(policy.core.state_names)
        self.state_names = (*(f"hidden_{name}" for name in policy.core.state_names),
                            *(("previous_action",) if previous_action else ()))
        if previous_action:  # the action shown at an episode's first step, as envs.previous_action shows it
            self.register_buffer("null", null_action(policy.action_space, policy.critic.weight.device),
                                 persistent=False)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zeros of every state tensor for `batch_size` envs (the first step's episode_start resets them anyway):
        each hidden tensor `[num_layers, N, hidden_dim]`, then the previous action `[N, *action shape]`."""
        param = self.policy.critic.weight
        shape = (self.policy.num_layers, batch_size, self.policy.hidden_dim)
        hidden = tuple(torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(self.num_hidden))
        if not self.previous_action:
            return hidden
        return (*hidden, torch.zeros((batch_size, *self.null.shape), dtype=self.null.dtype, device=param.device))

    def forward(self, obs: Obs, state: tuple[torch.Tensor, ...], episode_start: torch.Tensor,
                deterministic: bool = True) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        hidden = tuple(state[:self.num_hidden])
        if self.previous_action:
            starts = episode_start.reshape(-1, *(1,) * self.null.dim())  # [N, 1, ...] against the action's shape
            obs = {**obs, PREVIOUS_ACTION: torch.where(starts, self.null, state[self.num_hidden]),
                   IS_FIRST: episode_start.to(torch.int64)}
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)  # frozen: the run's statistics, never updated here
        out = self.policy.get_action(obs, hidden, episode_start, deterministic)
        action = self.policy.env_action(out.action)
        if not self.previous_action:
            return action, out.hidden
        return action, (*out.hidden, action.reshape(-1, *self.null.shape).to(self.null.dtype))


def load_step(path: str | Path, device: torch.device | str = "cpu") -> tuple[PolicyStep, dict[str, Any]]:
    """The step of the run saved at `path` (a run folder or its checkpoint.pt) on `device`, and the run's saved
    configuration (a dict of TrainConfig's fields)."""
    state = read_checkpoint(path, device)
    policy = policy_from_checkpoint(state, device)
    obs_norm = obs_normalizer_from_checkpoint(state, device, path)
    step = PolicyStep(policy, obs_norm, bool(state["config"].get("previous_action", False)))
    return step.eval(), state["config"]


def example_inputs(step: PolicyStep, batch_size: int) -> tuple[Obs, tuple[torch.Tensor, ...], torch.Tensor]:
    """Inputs of `batch_size` envs to trace `step` with: zero observations with every action legal, the initial
    state, every episode starting."""
    device = step.policy.critic.weight.device
    obs = spaces.zeros(step.obs_space, (batch_size,), device)
    if isinstance(obs, dict) and ACTION_MASK in obs:
        obs[ACTION_MASK].fill_(True)
    return obs, step.initial_state(batch_size), torch.ones(batch_size, dtype=torch.bool, device=device)


def tensor_info(x: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}


def metadata(step: PolicyStep, batch_size: int, env: str) -> dict[str, Any]:
    """What a user of the exported step needs besides the program: the env it was trained on, the batch size it
    takes, and the shape and dtype of every input and output."""
    obs, state, starts = example_inputs(step, batch_size)
    with torch.inference_mode():
        action, _ = step(obs, state, starts)
    return {"format": "recurrent-ppo policy step 1", "env": env, "batch_size": batch_size,
            "observation": {path or "": tensor_info(x) for path, x in
                            (obs.items() if isinstance(obs, dict) else (("", obs),))},
            "state": {name: tensor_info(x) for name, x in zip(step.state_names, state)},
            "episode_start": tensor_info(starts), "action": tensor_info(action),
            "observation_space": spaces.to_data(step.obs_space),
            "action_space": spaces.to_data(step.policy.action_space)}


def export_program(step: PolicyStep, batch_size: int) -> torch.export.ExportedProgram:
    """`step` traced by `torch.export` for a fixed batch of `batch_size` envs (deterministic)."""
    if batch_size < 1:
        raise ValueError(f"the exported step needs a batch size >= 1, got {batch_size}")
    return torch.export.export(step, example_inputs(step, batch_size))


def written_atomically(out: Path, write) -> Path:
    """Call `write(temporary path)` beside `out`, then rename the file over `out`: a failed write leaves no file
    cut short under the final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last: torch.export.save warns about an archive whose name does not end in .pt2.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def check_onnx_installed() -> None:
    """Raise ImportError naming the extra to install unless torch.onnx.export (dynamo) can run."""
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"an ONNX export needs {' and '.join(missing)}: {ONNX_EXTRA}")


def save_onnx(program: torch.export.ExportedProgram, step: PolicyStep, out: Path) -> Path:
    """The exported program as one ONNX file (weights inside it), inputs named `obs` (or `obs/<path>`), the
    state's names and `episode_start`, outputs `action` and `next_<state name>`."""
    check_onnx_installed()
    paths = list(spaces.leaves(step.obs_space))
    inputs = [f"obs/{path}" if path else "obs" for path in paths] + [*step.state_names, "episode_start"]
    outputs = ["action", *(f"next_{name}" for name in step.state_names)]

    def write(tmp: str) -> None:
        onnx_program = torch.onnx.export(program, f=None, input_names=inputs, output_names=outputs,
                                         external_data=False)
        onnx_program.save(tmp, external_data=False)

    return written_atomically(out, write)


def export_run(path: str | Path, out: str | Path | None = None, *, batch_size: int = 1,
               onnx: bool = False) -> list[Path]:
    """Write the deterministic step of the run saved at `path` for `batch_size` envs, on the CPU, as a
    `torch.export` program (`out`, by default agent.pt2 in the run folder) and, with `onnx`, as an ONNX file
    beside it (`out` with the suffix .onnx). Files of those names are replaced. Returns the paths written."""
    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    out = Path(out) if out is not None else run_dir / PROGRAM_FILE
    if out.suffix != ".pt2":
        raise ValueError(f"the program's file {out} must end in .pt2, torch.export's archive (an ONNX file takes "
                         f"the same name with .onnx)")
    if onnx:
        check_onnx_installed()  # before anything is written
    step, config = load_step(path, "cpu")
    program = export_program(step, batch_size)
    extra = {METADATA_FILE: json.dumps(metadata(step, batch_size, config.get("env", "")), indent=1)}
    written = [written_atomically(out, lambda tmp: torch.export.save(program, tmp, extra_files=extra))]
    if onnx:
        written.append(save_onnx(program, step, out.with_suffix(".onnx")))
    return written


class ExportedStep:
    """A step `export_run` wrote, loaded: `step(obs, state, episode_start) -> (action, state)` as `PolicyStep`
    computes it, for the batch size it was exported with (`metadata["batch_size"]`)."""

    def __init__(self, path: str | Path) -> None:
        extra = {METADATA_FILE: ""}
        self.program = torch.export.load(path, extra_files=extra)
        self.module = self.program.module()
        self.metadata: dict[str, Any] = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        """Zeros of every state tensor: the first step, with episode_start true, starts from them."""
        return tuple(torch.zeros(info["shape"], dtype=getattr(torch, info["dtype"]))
                     for info in self.metadata["state"].values())

    def __call__(self, obs: Obs, state: tuple[torch.Tensor, ...],
                 episode_start: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        action, next_state = self.module(obs, state, episode_start)
        return action, tuple(next_state)


def load_exported(path: str | Path) -> ExportedStep:
    """The step in a .pt2 file that `recurrent-ppo export` wrote."""
    return ExportedStep(path)
