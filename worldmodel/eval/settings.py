"""What `worldmodel eval` does, as one dataclass the command line fills in (no PyTorch here, so the
CLI starts fast and refuses bad numbers before any model is loaded)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

HEADLINE_FRAMES = 16  # PSNR@16, SSIM@16, sharpness@16
GOALS = {  # the goals for a world that holds; the report marks each figure against them
    "visible": 0.99,  # the player drawn in at least 99 % of generated frames
    "ood": 0.05,  # at most 5 % of generated frames farther from every real frame than 99 % of real ones
    "fd_first_over_floor": 10.0,  # the first bucket's FD within 10x the real-vs-real floor
    "fd_drift": 1.2,  # every bucket's FD within 1.2x the first one's (when there is no real twin)
    "fd_over_twin": 1.5,  # every bucket's FD within 1.5x the real twin's in the same bucket
    # idle: every bucket's PSNR against the real game at least PSNR@1 less 3 dB (a world that holds
    # still stays about as close to the game as its next frame; the slimes wander where no model knows)
    "idle_psnr_drop": 3.0,
    # scripted: every bucket's composition (palette shares) within 0.10 of the real twin's beyond what a
    # second real walk from the same start differs by (known cases: the real clip 8 frames on 0.016, a
    # blur 0.11-0.14, the world emptied of its objects 0.435, a lattice 0.480; docs/eval/README.md)
    "composition_excess": 0.10,
    "action_ratio": 0.90,
    "psnr_at_1": 28.0,
    "psnr_at_16": 21.0,
    "sharpness": (0.8, 1.2),
}


MOTION_FRAMES = 6  # frames of each moment of the walls-and-moves test (rollouts.motion_agreement)


@dataclass
class EvalSettings:
    """The options of `worldmodel eval` (eval/cli.py gives each one's help)."""

    episodes: int = 8
    short_frames: int = 64
    # the short clips start from the real frame and the real frame before it (every training stage draws
    # after two real frames); 1: from the frame alone, padded with a copy as a session's start is (every
    # report before 2026-12-06: compare like with like)
    short_context: int = 2
    long_frames: int = 10000
    long_starts: int = 4  # long rollouts from the first frames of this many held-out episodes
    bucket: int = 1000
    early: int = 100  # the first bucket of every long rollout: frames 1..early
    # walls and moves: up to this many moments of each (0: none); 32 stops measured a share to about +-0.08,
    # more than two models differed by (docs/eval/README.md), so as many as the episodes hold, up to 128
    motion_moments: int = 128
    probe_steps: int = 1500
    probe_batch: int = 64
    reference_frames: int = 5000
    seed: int = 0
    device: str = "auto"
    allow_overlap: bool = False
    video_frames: int = 300
    scale: int = 4

    def validate(self) -> None:
        """A ValueError naming the option for a bad number."""
        mins = dict(
            episodes=1, short_frames=1, long_frames=0, bucket=1, early=2, probe_steps=1, probe_batch=2
        )
        mins.update(long_starts=1, motion_moments=0, short_context=1)
        mins.update(reference_frames=2, video_frames=1, scale=1)
        for name, lo in mins.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
        if 0 < self.long_frames < 8:
            raise ValueError(f"--long-frames must be 0 (no drift test) or >= 8, got {self.long_frames}")

    def buckets(self) -> int:
        """The bucket size used: --bucket, made smaller so that there are at least 4 buckets."""
        return max(1, min(self.bucket, self.long_frames // 4))

    def early_bucket(self) -> int:
        """The early bucket's size: --early, at most the bucket size."""
        return max(2, min(self.early, self.buckets()))


# the settings `worldmodel eval` takes from its command line (the video's length and scale are fixed)
EVAL_OPTIONS = tuple(
    f.name for f in dataclasses.fields(EvalSettings) if f.name not in ("video_frames", "scale")
)
