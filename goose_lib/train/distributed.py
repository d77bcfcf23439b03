"""Process-group handling for training under ``torchrun`` (DDP): one context object, no globals.

A single process (no ``WORLD_SIZE`` in the environment, or 1) gets a trivial context; under
torchrun the process group is created from the environment (gloo on CPU, nccl on CUDA, one GPU
per local rank) and destroyed again by :meth:`DistContext.close` if this module created it.
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
    owns = False
    if not dist.is_initialized():
        if cuda:
            dist.init_process_group("nccl", device_id=torch_device)
        else:
            dist.init_process_group("gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), torch_device, owns)


def all_reduce_mean(t: torch.Tensor) -> float:
    """Mean of a scalar tensor over all ranks (the value itself in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.detach().clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return float(t)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]
