"""Stage 3: ODE initialisation of the causal few-step student (CausVid; docs/training.md).

The teacher integrates its ODE with guidance over a clip from c real context frames
(`teacher_steps` Euler steps on a grid that contains the student's few-step levels), keeping
x_t at those levels and the clean end x0. The student, the same network initialised from
the teacher but attending block-causally with the play window, regresses that x0 from x_t:
each generated frame is a target at a level drawn per chunk, and sees the clean frames
before it (real context, then the teacher's own x0) exactly as it will see its cache in play
(the teacher-forcing layout of worldmodel/model/attention.py). Loss: MSE on x0.

Context noise (`context_aug` > 0, off by default): for half the clips, those clean frames the
student conditions on are noised to one level uniform in [0, context_aug], given to it as their t,
so it learns to draw the next frame from a flawed past (its own, in play) instead of copying and
compounding the flaws: the teacher's context-noise augmentation (GameNGen, DIAMOND) carried to the
network that plays. The targets stay the teacher's clean x0; play still writes the cache clean.

The teacher may instead be an AR diffusion model (`causal`, train/ar.py; Causal Forcing): its ODE is
integrated chunk by chunk through the ring cache (`sample_causal`), so every target is a function of
what the student sees, and the student starts from it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..data.latents import LatentWindows
from ..model.attention import Layout
from ..model.config import ModelConfig
from ..model.diffusion import add_noise, few_step_schedule, to_x0
from ..model.dit import CausalDiT
from ..model.sampling import TEACHER_STEPS, frame_guidance, sample_causal, sample_clip, teacher_grid
from .base import Stage, check_whole_chunks, rand, randn_like
from .teacher import DEFAULTS as TEACHER
from .teacher import context_levels

DEFAULTS = dict(lr=1e-4, batch_size=8, teacher_steps=TEACHER_STEPS, context_aug=0.0)


class ODEStage(Stage):
    name = "ode"

    def __init__(
        self,
        cfg: ModelConfig,  # the student's
        latents_root,
        teacher: CausalDiT,
        device,
        seed=0,
        lr=DEFAULTS["lr"],
        clip_frames=TEACHER["clip_frames"],
        context=TEACHER["context"],
        guidance=TEACHER["guidance"],
        teacher_steps=DEFAULTS["teacher_steps"],
        student: CausalDiT | None = None,
        context_aug: float = DEFAULTS["context_aug"],
        causal: bool = False,
        stop_guidance: float | None = None,
        idle_guidance: float | None = None,
    ):
        if not 0.0 <= context_aug < 1.0:
            raise ValueError(f"context_aug must be in [0, 1), got {context_aug}")
        super().__init__(LatentWindows(latents_root, clip_frames), seed, device)
        self.context_aug = float(context_aug)
        # the teacher's sampler: the bidirectional clip model's, or an AR diffusion model's (train/ar.py)
        self.sampler = sample_causal if causal else sample_clip
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        # the student starts as a copy of the teacher, or from a given causal student (--init: continuing
        # a shipped world)
        start = teacher if student is None else student
        self.student = copy.deepcopy(start).to(device).train().requires_grad_(True)
        self.student.cfg = cfg  # the student's own config (its steps may differ from its start's)
        self.nets, self.frozen = {"generator": self.student}, {"teacher": self.teacher}
        self.cfg, self.lr, self.clip_frames, self.context, self.guidance = (
            cfg,
            lr,
            clip_frames,
            context,
            guidance,
        )
        check_whole_chunks(cfg, context=context, clip_frames=clip_frames)
        self.stop_scale = self.stop_guidance(latents_root, guidance, stop_guidance)  # --ode-stop-guidance
        if idle_guidance is not None and not idle_guidance >= 1.0:
            raise ValueError(f"idle guidance must be >= 1 (1: no guidance), got {idle_guidance}")
        self.idle_scale = guidance if idle_guidance is None else float(idle_guidance)  # --ode-idle-guidance
        self.levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
        self.level_t = torch.tensor(self.levels, device=device)  # on the device once, not every step
        self.grid = teacher_grid(cfg.steps, cfg.shift, teacher_steps)
        self.layout = Layout.teacher_forcing(clip_frames, device, context)

    def optim(self, name):
        return dict(lr=self.lr, betas=(0.9, 0.99), weight_decay=0.01)

    def settings(self) -> dict:
        out = {"stop_guidance": self.stop_scale} if self.stops is not None else {}
        if self.idle_scale != self.guidance:
            out["idle_guidance"] = self.idle_scale
        return out

    def pair_guidance(self, batch):
        """The teacher's guidance for the batch's pairs: --guidance where a key is pressed,
        --ode-idle-guidance where none is (the no-key action is all zeros), and --ode-stop-guidance on the
        frames whose key the game refused in the recording; (B, F) where they differ."""
        stopped = self.stopped(batch)
        return frame_guidance(batch["actions"], self.guidance, self.idle_scale, self.stop_scale, stopped)

    def loss(self, batch, step):
        g = self.noise_generator(batch)
        lat, actions = batch["latents"], batch["actions"]
        B, Fr, c, k = lat.shape[0], self.clip_frames, self.context, self.cfg.chunk
        x0, kept = self.sampler(
            self.teacher, lat[:, :c], actions, Fr, self.grid, self.pair_guidance(batch), g, keep=self.levels
        )
        # a level per chunk of generated frames
        n_chunks = (Fr - c) // k
        j = (rand((B, n_chunks), g, lat.device) * len(self.levels)).long().clamp_max(len(self.levels) - 1)
        j = j.repeat_interleave(k, 1)  # (B, F - c)
        stack = torch.stack([kept[round(t, 6)] for t in self.levels])  # (T, B, F - c, ...)
        x_t = stack.gather(0, j[None, :, :, None, None, None].expand(1, *stack.shape[1:]))[0]
        t_gen = self.level_t[j]  # (B, F - c)
        past, t_past = x0, torch.zeros(B, Fr, device=lat.device)
        if self.context_aug > 0:  # the past the student reads, noised for half the clips
            t_past = t_past + context_levels(self.context_aug, B, g, lat.device)[:, None]
            past = add_noise(x0, randn_like(x0, g), t_past)
        inp = torch.cat([past, x_t], 1)
        t = torch.cat([t_past, t_gen], 1)
        a = torch.cat([actions, actions[:, c:]], 1)
        pred = self.student(inp, t, a, self.layout)[:, Fr:]
        x0_pred = to_x0(pred, x_t, t_gen, self.cfg.prediction)
        loss = F.mse_loss(x0_pred.float(), x0[:, c:].float())
        return {"generator": loss}, {}
