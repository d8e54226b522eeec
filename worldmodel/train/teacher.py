"""Stage 2: the teacher, a bidirectional clip model (docs/training.md, its table).

Clips of F latent frames whose first c are clean context (t = 0) and whose other frames share
one noise level t drawn logit-normal (SD3); the network (the same CausalDiT, attending
bidirectionally over the clip) predicts the flow eps - x0 of the noisy frames. Each frame is
conditioned on the action that produced it; with probability `action_drop` a clip's actions
are replaced by the learned null action, so the teacher can give classifier-free guidance
over actions: x0 = x0_uncond + g (x0_cond - x0_uncond) (the official code's scale 3.0 is
g = 4 in this form, cond + 3 (cond - uncond)).

Context-noise augmentation (`context_aug` > 0; GameNGen, DIAMOND's `noise_previous_obs`): for half
the clips, the context frames are noised to a level drawn uniformly from [0, context_aug], and that
level is the model's t for those frames, so the teacher learns to draw the next frames from an
imperfect past instead of copying its flaws (what its rollouts and the students' own frames give it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.latents import LatentWindows
from ..model.attention import Layout
from ..model.config import ModelConfig
from ..model.diffusion import add_noise, flow_target, sample_logit_normal
from ..model.dit import CausalDiT
from ..model.sampling import GUIDANCE, START_CONTEXT
from .base import Stage, rand, randn_like

# lr 2e-3 (constant after the warm-up): against 2e-4, 6 dB more PSNR@1 at the same steps on the same
# batches; against 1e-3, a lower held-out loss with either of two seeds; a cosine decay did worse
# (docs/training.md, "The teacher's learning rate")
DEFAULTS = dict(
    lr=2e-3,
    batch_size=16,
    clip_frames=12,
    context=START_CONTEXT,
    action_drop=0.1,
    guidance=GUIDANCE,
    context_aug=0.0,
    stop_weight=0.0,
)


def context_levels(context_aug: float, B: int, g, device) -> torch.Tensor:
    """(B,) noise levels of each clip's context frames: 0, or with `context_aug` > 0 for half the clips,
    uniform in [0, context_aug]. Draws nothing from g when off, so a run without it is unchanged."""
    if context_aug <= 0:
        return torch.zeros(B, device=device)
    u, keep = rand((B,), g, device), rand((B,), g, device) < 0.5
    return torch.where(keep, torch.zeros_like(u), u * context_aug)


class TeacherStage(Stage):
    name = "teacher"

    def __init__(
        self,
        cfg: ModelConfig,
        latents_root,
        device,
        seed=0,
        lr=DEFAULTS["lr"],
        clip_frames=DEFAULTS["clip_frames"],
        context=DEFAULTS["context"],
        action_drop=DEFAULTS["action_drop"],
        init: CausalDiT | None = None,
        context_aug: float = DEFAULTS["context_aug"],
        stop_weight: float = DEFAULTS["stop_weight"],
    ):
        super().__init__(LatentWindows(latents_root, clip_frames), seed, device)
        if not 0 < context < clip_frames:
            raise ValueError(f"context ({context}) must be between 1 and clip_frames - 1 ({clip_frames - 1})")
        if not 0.0 <= context_aug < 1.0:
            raise ValueError(f"context_aug must be in [0, 1), got {context_aug}")
        torch.manual_seed(seed)
        self.dit = init if init is not None else CausalDiT(cfg)
        self.dit.to(device).train()
        self.nets = {"generator": self.dit}
        self.lr, self.clip_frames, self.context, self.action_drop = lr, clip_frames, context, action_drop
        self.context_aug = float(context_aug)
        self.stop_weight = float(stop_weight)
        self.draw_by_stops(latents_root, self.stop_weight, first=context, option="--stop-weight")
        self.layout = Layout.clip(clip_frames, causal=False, device=device)

    def settings(self) -> dict:
        return {"stop_weight": self.stop_weight} if self.stop_weight else {}

    def optim(self, name):
        return dict(lr=self.lr, betas=(0.9, 0.99), weight_decay=0.01)

    def loss(self, batch, step):
        g = self.noise_generator(batch)
        x0, actions = batch["latents"], batch["actions"]
        B, Fr, c = x0.shape[0], x0.shape[1], self.context
        t = sample_logit_normal((B,), generator=g, device=x0.device)
        t_ctx = self.context_levels(B, g, x0.device)
        t_frames = torch.cat([t_ctx[:, None].expand(B, c), t[:, None].expand(B, Fr - c)], 1)
        noise = randn_like(x0, g)
        x_t = add_noise(x0, noise, t_frames)
        drop = (rand((B,), g, x0.device) < self.action_drop)[:, None].expand(B, Fr)
        pred = self.dit(x_t, t_frames, actions, self.layout, action_drop=drop)
        target = self.target(x0, noise, x_t, t_frames, actions, drop)
        loss = F.mse_loss(pred[:, c:].float(), target[:, c:].float())
        return {"generator": loss}, {"t_mean": t.mean()}

    def target(self, x0, noise, x_t, t_frames, actions, drop) -> torch.Tensor:
        """What the network learns to predict: the flow eps - x0 (or x0) of the data."""
        return flow_target(x0, noise) if self.dit.cfg.prediction == "flow" else x0

    def context_levels(self, B: int, g, device) -> torch.Tensor:
        return context_levels(self.context_aug, B, g, device)


class StudentStartStage(TeacherStage):
    """The teacher's objective at a student's shape (pipeline.py's `student` stage). Given the trained
    teacher, the target is the teacher's own prediction for the same noisy clip, keys and dropped
    actions, instead of the data's flow: the teacher's estimate of the mean flow, a target of far less
    variance than one noise draw's, and the function the later stages distil anyway."""

    name = "student"

    def __init__(
        self, cfg: ModelConfig, latents_root, device, seed=0, teacher: CausalDiT | None = None, **kw
    ):
        super().__init__(cfg, latents_root, device, seed, **kw)
        self.teacher = None
        if teacher is not None:
            self.teacher = teacher.to(device).eval().requires_grad_(False)
            self.frozen = {"teacher": self.teacher}

    def target(self, x0, noise, x_t, t_frames, actions, drop) -> torch.Tensor:
        if self.teacher is None:
            return super().target(x0, noise, x_t, t_frames, actions, drop)
        with torch.no_grad():
            return self.teacher(x_t, t_frames, actions, self.layout, action_drop=drop)
