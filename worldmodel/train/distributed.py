"""Several GPUs under torchrun: which rank this process is, joining the process group, and the device
of each rank (the one device rule of worldmodel/device.py, each rank on its own GPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..device import resolve_device as device_rule


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str) -> torch.device:
    """The one device rule (worldmodel/device.py), with each torchrun rank on its own GPU."""
    d = device_rule(device)
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return d
