"""Training windows held on the device: every episode's arrays in one tensor there, a batch gathered by
index arithmetic instead of read item by item from the memory maps and copied over from the host.

On a GPU a training step of the tiny model is a few milliseconds of kernels; reading a batch of 64
twelve-frame windows out of the memory maps took about 8 ms of one CPU core on its own (45 ms while
the page cache was cold), with the GPU waiting. `Stage.sample` gathers from here when the windows fit
(train/base.py: by default on a GPU, under a quarter of its free memory). The windows, their order and
their values are those of the dataset's own `__getitem__` (tested).
"""

from __future__ import annotations

import numpy as np
import torch


def lay_end_to_end(lengths: list[int], read, device) -> dict[str, torch.Tensor]:
    """{name: (sum(lengths), ...) tensor on `device`}: `read(i)` gives episode i's arrays ({name: array
    of lengths[i] frames}), each copied into tensors made once, one episode at a time (the host never
    holds more than one episode's copy)."""
    out, at = {}, 0
    for i, n in enumerate(lengths):
        for name, a in read(i).items():
            a = torch.from_numpy(np.array(a))  # a writable copy of this episode alone
            if len(a) != n:
                raise ValueError(f"{name} of episode {i}: {len(a)} frames, expected {n}")
            if name not in out:
                out[name] = torch.empty((sum(lengths), *a.shape[1:]), dtype=a.dtype, device=device)
            out[name][at : at + n].copy_(a)
        at += n
    return out


class HeldWindows:
    """Windows of `num_frames` frames (every `stride`-th start) of episodes laid end to end in `arrays`
    (name -> (total frames, ...) tensors on one device), numbered as the dataset that holds them numbers
    them: `ends[i]`, its windows up to the end of episode i (the dataset's own `_ends`)."""

    def __init__(
        self,
        arrays: dict[str, torch.Tensor],
        lengths: list[int],
        ends: list[int],
        num_frames: int,
        stride: int = 1,
    ):
        device = next(iter(arrays.values())).device
        self.arrays, self.stride = arrays, stride
        self.ends = torch.as_tensor(ends, device=device)
        self.before = torch.as_tensor([0, *ends[:-1]], device=device)  # windows before each episode
        self.first = torch.as_tensor(np.cumsum([0, *lengths[:-1]]), device=device)  # its first frame
        self.frames = torch.arange(num_frames, device=device)
        self.device, self.count = device, int(ends[-1])

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.arrays.values())

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: (B, num_frames, ...)} for the windows numbered `index` (B,)."""
        index = index.to(self.device)
        ep = torch.searchsorted(self.ends, index, right=True)
        start = self.first[ep] + (index - self.before[ep]) * self.stride
        rows = start[:, None] + self.frames
        return {name: a[rows] for name, a in self.arrays.items()}
