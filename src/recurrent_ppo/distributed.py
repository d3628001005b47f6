"""Data-parallel training over torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc-per-node 2 -m recurrent_ppo train --num-envs 4096 ...

Each process steps its own `num_envs` envs (seeded per rank) into its own buffer and computes its own GAE;
every minibatch's gradients are averaged across processes (one all-reduce of one flat buffer) before clipping
and the optimizer step, so the replicas, equal at the start (rank 0's weights are broadcast), stay equal.
`total_steps` counts the steps of all processes. Rank 0 alone writes the run folder and evaluates. On CUDA
the group uses NCCL and process i the device cuda:LOCAL_RANK; elsewhere gloo.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_type: str) -> Group:
    """The process group this process belongs to: the one already initialized, or the one torchrun describes in
    the environment (joined here: NCCL for CUDA, gloo otherwise); a process started on its own is a group of one."""
    if not dist.is_available() or not (dist.is_initialized() or launched_by_torchrun()):
        return Group()
    if not dist.is_initialized():
        if device_type == "cuda":  # NCCL binds each process to the device current when it starts
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def leave() -> None:
    """Tear the process group down, if this process has one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    torch._foreach_copy_(tensors, [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]),
                                                                       tensors)])


def average_gradients(params: Iterable[torch.nn.Parameter], group: Group) -> None:
    """Replace each parameter's gradient by its mean over the processes: one all-reduce of one flat buffer.
    A parameter without a gradient on this process counts as a zero gradient (every rank must take part)."""
    if not group.parallel:
        return
    params = list(params)
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    grads = [param.grad for param in params]
    flat = _flat(grads)
    dist.all_reduce(flat)
    flat /= group.world_size
    _unflatten_into(flat, grads)


def all_sum(tensor: torch.Tensor, group: Group) -> torch.Tensor:
    """The sum of `tensor` over the processes (a new tensor; `tensor` itself is left as it is)."""
    total = tensor.clone()
    if group.parallel:
        dist.all_reduce(total)
    return total


def broadcast_module(module: torch.nn.Module, group: Group) -> None:
    """Give every process rank 0's parameters and buffers."""
    if not group.parallel:
        return
    tensors = [t.data for t in (*module.parameters(), *module.buffers())]
    flat = _flat(tensors)
    dist.broadcast(flat, src=0)
    _unflatten_into(flat, tensors)


def check_in_sync(module: torch.nn.Module, group: Group) -> None:
    """Raise on every process if any replica's parameters differ from rank 0's: averaged gradients must keep
    them equal, and a silent drift would train N different policies while logging one."""
    if not group.parallel:
        return
    mine = _flat(list(module.parameters()))
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    drift = all_sum((mine - reference).abs().max().reshape(1), group)
    if float(drift) > 0.0:
        raise RuntimeError(f"data-parallel replicas drifted apart: parameters differ from rank 0's by up to "
                           f"{float(drift):.3g} (summed over ranks); gradients were not averaged on every rank")
