"""The one device rule, and the machine in words (imports PyTorch only when asked about a device).

"auto" is a CUDA GPU when there is one, else the CPU; asking for CUDA where there is none is an
error, said plainly."""

from __future__ import annotations

import platform
from pathlib import Path


def resolve_device(device):
    """A torch.device from "auto", "cpu", "cuda", "cuda:1" or a torch.device."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA GPU is available (use --device cpu or auto)")
    return d


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """What the device is, in words: the GPU's name, or the CPU's with PyTorch's thread count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"
