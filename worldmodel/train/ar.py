"""Stage 2b (optional): an AR diffusion model, the causal teacher of the ODE stage (Causal Forcing,
Zhu et al. 2026, its stage 1; docs/training.md).

The ODE stage regresses a causal student onto its teacher's ODE pairs (noise -> x0). When the teacher
is the bidirectional clip model, a frame's x0 depends on the noise of the frames after it too, which
the causal student never sees: its targets are not a function of its inputs, so it learns their
average and draws it, frame after frame (the lattice of docs/training.md, "Long rollouts from four
starts"). An AR diffusion model is a many-step causal model: from it the pairs are a function of the
frames before and the frame's own noise only (`model/sampling.py`'s `sample_causal`).

This stage trains one by teacher forcing, starting from the bidirectional teacher's weights: every
frame of a clip after its c real context frames is a target, noised to its own level (logit-normal,
one per chunk), attending block-causally, within the play window, to the clean frames before it
(the ODE stage's layout, worldmodel/model/attention.py); loss: the flow, as the teacher's. Action
dropout (per clip, for guidance) and context noise (`context_aug`, on the clean frames) as the
teacher's. `worldmodel train ode --ode-teacher ar` then takes its pairs and its student's start from
it, while Self Forcing's DMD keeps the bidirectional teacher as its real score ("asymmetric DMD").
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..model.attention import Layout
from ..model.config import ModelConfig
from ..model.diffusion import add_noise, flow_target, sample_logit_normal
from ..model.dit import CausalDiT
from .base import check_whole_chunks, rand, randn_like
from .teacher import DEFAULTS as TEACHER
from .teacher import TeacherStage, context_levels

DEFAULTS = dict(lr=5e-4, batch_size=8)  # the rate of the one CPU run measured (docs/training.md)


class ARDiffusionStage(TeacherStage):
    name = "ar"

    def __init__(
        self,
        cfg: ModelConfig,
        latents_root,
        device,
        teacher: CausalDiT,
        seed=0,
        lr=DEFAULTS["lr"],
        clip_frames=TEACHER["clip_frames"],
        context=TEACHER["context"],
        action_drop=TEACHER["action_drop"],
        context_aug: float = 0.0,
    ):
        # a copy that trains, whatever the teacher's state (the ODE and DMD stages freeze theirs)
        start = copy.deepcopy(teacher).train().requires_grad_(True)
        super().__init__(
            cfg, latents_root, device, seed, lr, clip_frames, context, action_drop, start, context_aug
        )
        check_whole_chunks(cfg, context=context, clip_frames=clip_frames)
        self.layout = Layout.teacher_forcing(clip_frames, device, context)

    def loss(self, batch, step):
        g = self.noise_generator(batch)
        x0, actions = batch["latents"], batch["actions"]
        B, Fr, c, k = x0.shape[0], x0.shape[1], self.context, self.dit.cfg.chunk
        t = sample_logit_normal((B, (Fr - c) // k), generator=g, device=x0.device).repeat_interleave(k, 1)
        noise = randn_like(x0[:, c:], g)
        x_t = add_noise(x0[:, c:], noise, t)
        t_past = context_levels(self.context_aug, B, g, x0.device)[:, None].expand(B, Fr)
        past = x0 if self.context_aug <= 0 else add_noise(x0, randn_like(x0, g), t_past)
        drop = (rand((B,), g, x0.device) < self.action_drop)[:, None].expand(B, 2 * Fr - c)
        inp, levels = torch.cat([past, x_t], 1), torch.cat([t_past, t], 1)
        pred = self.dit(inp, levels, torch.cat([actions, actions[:, c:]], 1), self.layout, action_drop=drop)
        loss = F.mse_loss(pred[:, Fr:].float(), flow_target(x0[:, c:], noise).float())
        return {"generator": loss}, {"t_mean": t.mean()}
