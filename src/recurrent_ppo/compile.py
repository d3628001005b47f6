"""One switch for torch.compile across the hot paths: the rollout step, the update's loss, evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
F = TypeVar("F", bound=Callable)


def compile_fn(fn: F, mode: str, backend: str | Callable = "inductor") -> F:
    """`fn` compiled with `fullgraph=True` (a graph break is an error, never a silent eager fallback), or `fn`
    itself when `mode` is "off". Backends other than inductor ("eager", "aot_eager", a callable) take no mode."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} is not one of {COMPILE_MODES}")
    if mode == "off":
        return fn
    if backend != "inductor":
        return torch.compile(fn, fullgraph=True, backend=backend)
    return torch.compile(fn, fullgraph=True, mode=None if mode == "default" else mode)


def compile_step(owner: object, step: str, parts: tuple[str, ...], host_env: bool, mode: str,
                 backend: str | Callable = "inductor") -> Callable:
    """The compiled form of `owner.<step>`, a step that calls an env's `step` between its `parts` (methods of
    `owner`). A device env is traced through: the whole step is one graph. A host env (numpy, Python) cannot
    be, so each part is compiled in its place on `owner` and the step itself runs eagerly around the env."""
    if not host_env:
        return compile_fn(getattr(owner, step), mode, backend)
    for name in parts:
        setattr(owner, name, compile_fn(getattr(owner, name), mode, backend))
    return getattr(owner, step)


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    return device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")


def mark_static_state(*owners: object) -> None:
    """Mark the tensor attributes of `owners` (env, episode tracker, a carry's owner) as static addresses, so
    CUDA graphs read them in place, and may update them in place: cudagraph trees copy every other input into
    the graph before each replay, and skip graphs that mutate inputs unless those inputs are static."""
    for owner in owners:
        for value in vars(owner).values():
            if isinstance(value, torch.Tensor):
                torch._dynamo.mark_static_address(value)
            elif isinstance(value, tuple) and all(isinstance(item, torch.Tensor) for item in value):
                for item in value:  # e.g. the LSTM state (h, c)
                    torch._dynamo.mark_static_address(item)


def cuda_graph_step_begin(mode: str, device: torch.device) -> None:
    """Tell cudagraph trees a new step begins, so a replay may reuse the memory of the previous step's outputs
    (the caller has already copied what it keeps, e.g. into the rollout buffer)."""
    if uses_cuda_graphs(mode, device):
        torch.compiler.cudagraph_mark_step_begin()
