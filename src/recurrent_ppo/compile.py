"""One switch for torch.compile across the hot paths: the rollout step, the update's loss, evaluation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, TypeVar, get_args

import torch
import torch.utils._pytree as pytree

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
"""torch.compile's modes ("default": mode=None), and off: eager."""
CompileBackend = Literal["inductor", "eager", "aot_eager"]
"""inductor generates code; eager and aot_eager trace with fullgraph=True without generating code."""
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
F = TypeVar("F", bound=Callable)


def compile_fn(fn: F, mode: str, backend: str | Callable = "inductor") -> F:
    """`fn` compiled with `fullgraph=True` (a graph break is an error, never a silent eager fallback), or `fn`
    itself when `mode` is "off". Backends other than inductor ("eager", "aot_eager", a callable) take no mode."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} is not one of {COMPILE_MODES}")
    if mode == "off":
        return fn
    if backend != "inductor":
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
    else:
        compiled = torch.compile(fn, fullgraph=True, mode=None if mode == "default" else mode)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if torch.is_grad_enabled():  # training: never the rollout, which runs under inference mode
            refuse_inference_inputs(fn, (args, kwargs))
        return compiled(*args, **kwargs)

    return run


def refuse_inference_inputs(fn: Callable, inputs: object) -> None:
    """Raise as autograd does for an inference tensor that training would save. Eager, autograd raises when it
    saves one; compiled, AOTAutograd may save a view of it instead and train on it silently (it does for the
    GRU's state under inductor), so the compiled callables check their inputs here, on the host."""
    if any(isinstance(x, torch.Tensor) and x.is_inference() for x in pytree.tree_leaves(inputs)):
        raise RuntimeError(f"Inference tensors cannot be saved for backward: an input of the compiled "
                           f"{getattr(fn, '__qualname__', fn)} was made under torch.inference_mode() (e.g. "
                           f"initial_hidden()) and grad is enabled; train on copies in normal tensors, as the "
                           f"rollout buffer holds them")


def compile_parts(step: Callable, parts: tuple[Callable, ...], host_env: bool, mode: str,
                  backend: str | Callable = "inductor") -> tuple[Callable, tuple[Callable, ...]]:
    """The callables to run for `step`, a step that calls an env's `step` between its `parts`, and for the parts
    it calls: through a device env the whole step is compiled, one graph, and the parts are traced inside it; a
    host env (numpy, Python) cannot be traced, so each part is compiled and the step runs eagerly around the env.
    The step must call its parts through what this returns for them."""
    if not host_env:
        return compile_fn(step, mode, backend), parts
    return step, tuple(compile_fn(part, mode, backend) for part in parts)


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    return device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")


def mark_static_state(*owners: object) -> None:
    """Mark every tensor `owners` hold (env, episode tracker, a carry's owner; `snapshot.tensor_attributes`:
    attributes, tuples, dicts, nested plain objects) as a static address, so CUDA graphs read them in place,
    and may update them in place: cudagraph trees copy every other input into the graph before each replay,
    and skip graphs that mutate inputs unless those inputs are static."""
    from recurrent_ppo.snapshot import tensor_attributes

    for owner in owners:
        for tensor in tensor_attributes(owner).values():
            torch._dynamo.mark_static_address(tensor)


def cuda_graph_step_begin(mode: str, device: torch.device) -> None:
    """Tell cudagraph trees a new step begins, so a replay may reuse the memory of the previous step's outputs
    (the caller has already copied what it keeps, e.g. into the rollout buffer)."""
    if uses_cuda_graphs(mode, device):
        torch.compiler.cudagraph_mark_step_begin()
