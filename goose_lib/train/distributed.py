"""Process-group handling for training under ``torchrun`` (DDP): one context object, no globals.

A single process (no ``WORLD_SIZE`` in the environment, or 1) gets a trivial context; under
torchrun the process group is created from the environment (gloo on CPU, nccl on CUDA, one GPU
per local rank) and destroyed again by :meth:`DistContext.close` if this module created it.

On CUDA each rank is bound to ``cuda:LOCAL_RANK`` with ``torch.cuda.set_device`` *before* the
process group is created and before any collective: NCCL's object collectives
(``all_gather_object``) and ``barrier`` place their tensors on the *current* device, so without
the binding every rank would use ``cuda:0`` (a hang or "Duplicate GPU detected"). Every collective
below runs on the context's device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from goose_lib.paths import resolve_device


@dataclass
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world_size > 1:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup_distributed(device: str = "auto") -> DistContext:
    """The rank, world size and device of this process; joins torchrun's group when launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(0, 1, torch.device(dev))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = dev.startswith("cuda")
    torch_device = torch.device("cuda", local) if cuda else torch.device(dev)
    if cuda:
        # Before the group and any collective (see the module docstring).
        torch.cuda.set_device(torch_device)
    owns = False
    if not dist.is_initialized():
        if cuda:
            dist.init_process_group("nccl", device_id=torch_device)
        else:
            dist.init_process_group("gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), torch_device, owns)


def all_reduce_mean(t: torch.Tensor, device: torch.device | None = None) -> float:
    """Mean of a scalar tensor over all ranks (the value itself in a single process); the reduced
    tensor lives on ``device`` (the rank's bound device) when given, else where ``t`` is."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.detach().clone().to(device if device is not None else t.device)
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return float(t)


def all_gather_objects(obj: Any, device: torch.device | None = None) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process). On CUDA the
    pickled objects travel as tensors on ``device`` (default: the current device, which
    :func:`setup_distributed` bound to ``cuda:LOCAL_RANK``)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        if device is not None and device.type == "cuda":
            with torch.cuda.device(device):
                dist.all_gather_object(out, obj)
        else:
            dist.all_gather_object(out, obj)
        return out
    return [obj]
