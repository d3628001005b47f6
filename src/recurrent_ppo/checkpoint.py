"""Checkpoints written atomically: a crash mid-write never leaves a truncated file under the final name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from recurrent_ppo import spaces
from recurrent_ppo.models.policy import RecurrentPolicy
from recurrent_ppo.normalize import ObservationNormalizer
from recurrent_ppo.runfolder import writing
from recurrent_ppo.runstate import upgrade
from recurrent_ppo.snapshot import load_tensors


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save `state` to a temporary file beside `path`, fsync it, then rename it over `path`.

    Temporary files of `path` that killed writes left beside it are removed first (they can be as large as the
    checkpoint), so the caller must be the folder's only writer: the trainer holds the run folder's lock. An
    OSError (a read-only folder, a full disk) is raised as runfolder.RunFolderWriteError naming `path`."""
    path = Path(path)
    prefix = f".{path.name}."
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{prefix}*.tmp"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A file that is not a checkpoint the trainer wrote: empty, cut short, corrupt or foreign."""


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state the trainer saved at `path`: a checkpoint file, or a run folder holding checkpoint.pt.

    `state["policy_spec"]` is the policy's `RecurrentPolicy.spec()` (spaces, core, sizes as plain data); a
    checkpoint of an earlier format is read in the current one (`runstate.upgrade`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch.load's errors for empty, cut and foreign files vary by cause and version
        # torch's own message can mislead (for random bytes it advises weights_only=False), so it is not repeated
        raise CheckpointError(f"{path} is not a readable recurrent-ppo checkpoint (torch.load raised "
                              f"{type(err).__name__}): it is empty, cut short, corrupt or not a checkpoint; "
                              f"point at a run folder or the checkpoint.pt in it") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a recurrent-ppo checkpoint: it holds a {type(state).__name__}, "
                              f"not the trainer's dict")
    state = upgrade(state)
    missing = {"policy", "policy_spec", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{path} is not a recurrent-ppo checkpoint: it lacks {sorted(missing)}")
    return state


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> RecurrentPolicy:
    """Rebuild the policy saved by the trainer at `path` (a checkpoint file or its run folder), whatever its
    spaces and core. A policy trained with normalize_obs acts on normalized observations: pass them through
    `load_obs_normalizer(path)` first, or let `recurrent_ppo.load_agent(path)` do all of it."""
    return policy_from_checkpoint(read_checkpoint(path, device), device)


def policy_from_checkpoint(state: dict[str, Any], device: torch.device | str = "cpu") -> RecurrentPolicy:
    """The policy of a checkpoint already read (`read_checkpoint`), on `device`."""
    policy = RecurrentPolicy.from_spec(state["policy_spec"])
    policy.load_state_dict(state["policy"])
    return policy.to(device)


def load_obs_normalizer(path: str | Path, device: torch.device | str = "cpu") -> ObservationNormalizer | None:
    """The observation normalizer of the run saved at `path`, with the statistics it had at the checkpoint, to
    apply to what its policy sees; None for a run that did not normalize observations. It is frozen: calling it
    leaves the statistics as the run saved them unless `update=True` asks otherwise."""
    return obs_normalizer_from_checkpoint(read_checkpoint(path, device), device, path)


def obs_normalizer_from_checkpoint(state: dict[str, Any], device: torch.device | str = "cpu",
                                   path: str | Path = "the checkpoint") -> ObservationNormalizer | None:
    """`load_obs_normalizer` of a checkpoint already read (`read_checkpoint`); `path` names it in errors."""
    if not state["config"].get("normalize_obs", False):
        return None
    if "obs_norm" not in state:
        raise CheckpointError(f"{path}: the run normalized observations (normalize_obs), but its checkpoint holds "
                              f"no observation statistics, without which its policy cannot be evaluated")
    normalizer = ObservationNormalizer(spaces.from_data(state["policy_spec"]["obs_space"]), device)
    load_tensors(normalizer, state["obs_norm"], "observation normalizer")
    return normalizer
