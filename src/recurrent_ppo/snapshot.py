"""The tensors a run's objects hold, found by walking their attributes: what a checkpoint saves so a resumed run
goes on exactly as an uninterrupted one, and what CUDA graphs must read at fixed addresses.

An owner's tensors are its tensor attributes, the tensors in its tuples, lists and dicts (of str keys), and those
of the plain objects it holds (not modules, whose parameters a state_dict covers), each by a dotted path:
`state`, `hidden.0`, `state.deck`, `cartpole.elapsed`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


def join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def tensor_attributes(owner: object) -> dict[str, torch.Tensor]:
    """Every tensor `owner` holds, by path (see the module docstring); each object is walked once."""
    found: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            found.setdefault(path, value)
        elif isinstance(value, (tuple, list)):
            for index, item in enumerate(value):
                walk(item, join(path, index))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    walk(item, join(path, key))
        elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)) and not inspect.isroutine(value):
            if id(value) in seen:
                return
            seen.add(id(value))
            for name, item in vars(value).items():
                walk(item, join(path, name))

    walk(owner, "")
    return found


def save_tensors(owner: object) -> dict[str, torch.Tensor]:
    """Copies of `owner`'s tensors, by path, for a checkpoint."""
    return {path: tensor.detach().clone() for path, tensor in tensor_attributes(owner).items()}


def load_tensors(owner: object, saved: dict[str, torch.Tensor], what: str) -> None:
    """Copy `saved` (from `save_tensors`) into `owner`'s tensors in place, so compiled graphs and CUDA graphs
    that read them keep their addresses. Raises ValueError naming `what` and the path that does not fit."""
    current = tensor_attributes(owner)
    if set(current) != set(saved):
        raise ValueError(f"the checkpoint's {what} holds {sorted(saved)}, this run's {sorted(current)}")
    with torch.inference_mode():  # the rollout's carry tensors are inference tensors
        for path, tensor in current.items():
            value = saved[path]
            if value.shape != tensor.shape or value.dtype != tensor.dtype:
                raise ValueError(f"the checkpoint's {what} {path} is {value.dtype} {list(value.shape)}, this run's "
                                 f"{tensor.dtype} {list(tensor.shape)}")
            tensor.copy_(value)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The state of torch's generators that a run draws from: the CPU one, and the device's on CUDA."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
