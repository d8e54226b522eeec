"""Stage 2: the teacher, a bidirectional clip model (DESIGN.md section 6, row "teacher").

Clips of F latent frames whose first c are clean context (t = 0) and whose other frames share
one noise level t drawn logit-normal (SD3); the network (the same CausalDiT, attending
bidirectionally over the clip) predicts the flow eps - x0 of the noisy frames. Each frame is
conditioned on the action that produced it; with probability `action_drop` a clip's actions
are replaced by the learned null action, so the teacher can give classifier-free guidance
over actions: x0 = x0_uncond + g (x0_cond - x0_uncond) (the official code's scale 3.0 is
g = 4 in this form, cond + 3 (cond - uncond)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import Layout
from ..config import ModelConfig
from ..data.latents import LatentWindows
from ..diffusion import add_noise, flow_target, sample_logit_normal, to_x0
from ..model import CausalDiT
from .base import Stage, rand, randn_like

DEFAULTS = dict(lr=2e-4, batch_size=16, clip_frames=12, context=2, action_drop=0.1, guidance=3.0)


def predict_x0(dit, x, t, actions, layout, guidance: float = 1.0):
    """x0 predicted by `dit` for x (B, F, ...) at levels t (B, F), with guidance over actions (1 = none)."""
    if guidance == 1.0:
        return to_x0(dit(x, t, actions, layout), x, t, dit.cfg.prediction)
    B, Fr = t.shape
    drop = torch.cat([torch.zeros(B, Fr, dtype=torch.bool), torch.ones(B, Fr, dtype=torch.bool)]).to(x.device)
    pred = dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([actions, actions]), layout, action_drop=drop)
    x0 = to_x0(pred, torch.cat([x, x]), torch.cat([t, t]), dit.cfg.prediction)
    cond, uncond = x0[:B], x0[B:]
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def sample_clip(dit, context, actions, num_frames: int, levels, guidance: float, g: torch.Generator, keep=()):
    """Euler integration of the teacher's ODE over a clip: `context` (B, c, ...) clean, the other
    num_frames - c frames from pure noise down the noise `levels` (descending, from 1 to 0).
    Returns (x0 of all frames (B, F, ...), {level: x_t of the generated frames} for levels in `keep`)."""
    B, c = context.shape[:2]
    shape = (B, num_frames - c, *context.shape[2:])
    x = torch.randn(shape, generator=g, device=context.device, dtype=context.dtype)
    layout = Layout.clip(num_frames, causal=False, device=context.device)
    kept = {}
    levels = [float(v) for v in levels]
    for t, t_next in zip(levels[:-1], levels[1:], strict=True):
        if any(abs(t - k) < 1e-6 for k in keep):
            kept[round(t, 6)] = x.clone()
        tt = torch.cat([torch.zeros(B, c), torch.full((B, num_frames - c), t)], 1).to(x.device)
        x0 = predict_x0(dit, torch.cat([context, x], 1), tt, actions, layout, guidance)[:, c:]
        flow = (x - x0) / t
        x = x + (t_next - t) * flow
    return torch.cat([context, x], 1), kept


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
    ):
        super().__init__(LatentWindows(latents_root, clip_frames), seed, device)
        if not 0 < context < clip_frames:
            raise ValueError(f"context ({context}) must be between 1 and clip_frames - 1 ({clip_frames - 1})")
        torch.manual_seed(seed)
        self.dit = init if init is not None else CausalDiT(cfg)
        self.dit.to(device).train()
        self.nets = {"generator": self.dit}
        self.lr, self.clip_frames, self.context, self.action_drop = lr, clip_frames, context, action_drop
        self.layout = Layout.clip(clip_frames, causal=False, device=device)

    def optim(self, name):
        return dict(lr=self.lr, betas=(0.9, 0.99), weight_decay=0.01)

    def loss(self, batch, step):
        g = self.noise_generator(batch)
        x0, actions = batch["latents"], batch["actions"]
        B, Fr, c = x0.shape[0], x0.shape[1], self.context
        t = sample_logit_normal((B,), generator=g, device=x0.device)
        t_frames = torch.cat([torch.zeros(B, c, device=x0.device), t[:, None].expand(B, Fr - c)], 1)
        noise = randn_like(x0, g)
        x_t = add_noise(x0, noise, t_frames)
        drop = (rand((B,), g, x0.device) < self.action_drop)[:, None].expand(B, Fr)
        pred = self.dit(x_t, t_frames, actions, self.layout, action_drop=drop)
        target = flow_target(x0, noise) if self.dit.cfg.prediction == "flow" else x0
        loss = F.mse_loss(pred[:, c:].float(), target[:, c:].float())
        return {"generator": loss}, {"t_mean": float(t.mean())}
