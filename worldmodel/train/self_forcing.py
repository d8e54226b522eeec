"""Stage 4: Self Forcing with DMD (Huang et al. 2025, Algorithm 1; docs/training.md).

Each step the student rolls a clip out autoregressively, chunk by chunk, from c real context
frames, through the very KV-cache code it plays with (RingKVCache + CausalDiT.forward_cached):

    s = exit step, uniform over the T few-step levels, one per step, the same on every rank
    for each chunk: x = noise; for j = 1..T: x0 = G(x; t_j, cache)
                        j < s: no gradient, x = Psi(x0, fresh noise, t_{j+1})
                        j = s: with gradient, keep x0 as the chunk's output; stop
                    then, without gradient, write x0 into the cache at t = context_noise
    (reads of earlier cache slots are detached: gradients flow only through exit steps)

The whole generated clip is scored by distribution matching distillation (DMD, Yin et al.
2024): at a noise level t per sample (uniform, shifted by 5, clamped to [0.02, 0.98] as in
the official code), the frozen teacher with guidance gives x0_real, a critic (initialised
from the teacher, trained every step with the flow loss on the student's outputs) gives
x0_fake, and the student's output x moves along
    grad = (x0_fake - x0_real) / mean|x - x0_real|,   loss = 1/2 || x - stopgrad(x - grad) ||^2.
The critic is updated every step and the generator every `gen_every` (5) steps; AdamW with
betas (0, 0.999) for both; an EMA of the generator is what ships.

Baselines (`rollout`): "self" is Self Forcing; "teacher" (teacher forcing) writes the real
frames into the cache instead of the student's own, and "diffusion" (diffusion forcing) the
real frames noised to a random level per chunk, so the student never conditions on its own
output in training. Everything else (few-step denoising, DMD) is identical, which is the
paper's comparison.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from kernels.reference import cached_attention

from ..data.latents import LatentWindows
from ..model.attention import CachedAttention, KernelAttention, Layout
from ..model.config import ModelConfig
from ..model.diffusion import add_noise, few_step_schedule, flow_target, shift_timestep, to_x0
from ..model.dit import CausalDiT
from ..model.kv_cache import RingKVCache
from ..model.sampling import context_levels, frame_guidance, predict_x0, sink_rewrite_frame, write_context
from .base import Stage, check_whole_chunks, rand, randn_like
from .teacher import DEFAULTS as TEACHER

DEFAULTS = dict(
    # official 2e-6 for a pretrained 1.3B model; ours start from a few-minute tiny model. 1e-4 (50x) turned a
    # world at rest into a lattice within 42 generator updates of a lease; 2e-5 kept more of it on the CPU
    # test bed (docs/training/tiny-gpu-2/README.md)
    lr_generator=2e-6 * 10,
    lr_critic=4e-7 * 50,
    gen_every=5,  # dfake_gen_update_ratio
    dmd_shift=5.0,
    dmd_min=0.02,
    dmd_max=0.98,
    batch_size=4,
    ema=0.99,
    # ours, measured on the CPU test bed (docs/training/tiny-gpu-2/README.md): a quarter of the rollouts
    # with no key after their context, and DMD's real score unguided on frames at rest (keys keep the
    # teacher's guidance): at 2e-5 the player stayed in 99.9 % of idle frames against 74 % with neither
    idle_rollouts=0.25,
    idle_guidance=1.0,
)
ROLLOUTS = ("self", "teacher", "diffusion")
ENGINES = ("auto", "cached", "static")
# the static rollout's first frames against the cached engine's, relative RMS: float rounding gives about
# 1e-5 in fp32 (bf16 autocast's rounding more); a buffer read stale or a pass missed gives about 1
STATIC_TOLERANCE = 0.1
STATIC_CHECK_EVERY = 200  # steps between two checks of the static rollout (one eager rollout each)
STATIC_CHECK_FRAMES = 4  # the generated frames the check judges


def dmd_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """Distribution matching: descending it moves x towards the real score's x0 and away from the
    fake one's. The step is normalised per sample by mean|x - x0_real| (DMD's weighting)."""
    with torch.no_grad():
        dims = tuple(range(1, x.dim()))
        weight = (x - x0_real).abs().float().mean(dim=dims, keepdim=True).clamp_min(1e-8)
        grad = torch.nan_to_num((x0_fake - x0_real).float() / weight)
        target = (x.float() - grad).detach()
    return 0.5 * F.mse_loss(x.float(), target)


def _relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _dispatch_mode_active() -> bool:
    """Whether a TorchDispatchMode (torch.utils.flop_counter's) sees the ops run now: a replayed CUDA graph
    would hide its kernels from it."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover
        return False
    return _get_current_dispatch_mode() is not None


def dmd_timesteps(
    batch: int, g, device, shift=DEFAULTS["dmd_shift"], lo=DEFAULTS["dmd_min"], hi=DEFAULTS["dmd_max"]
):
    return shift_timestep(rand((batch,), g, device), shift).clamp(lo, hi)


def rollout(
    student: CausalDiT,
    real,
    actions,
    context: int,
    levels,
    exit_index: int,
    g,
    mode: str = "self",
    grad: bool = True,
    context_noise: float = 0.0,
    engine: str = "cached",
    idle_noise: float | None = None,
    static=None,
    grad_from: int | None = None,
):
    """Algorithm 1's rollout. real (B, F, C, h, w): the first `context` frames seed the cache (and,
    for the baselines, the rest is what the cache holds). Returns the clip (B, F, ...): real context
    then the student's chunks, whose exit-step outputs carry gradients when `grad`. `engine`: the
    attention over the cache, "cached" (play's CachedAttention, out of place: about half the kernels a
    pass), "reference" (kernels/reference.py, the spec), or "static" (mode "self" only: the passes
    without a gradient as fixed-shape functions, CUDA graphs on a GPU; `static` is the
    static_rollout.StaticRollout of the student at this batch size, made here when not given).
    `grad_from`: the first frame whose output needs a gradient (default: the first generated); the chunks
    before it, whose outputs no loss reads (a rollout longer than the scored window), run without one."""
    grad_from = context if grad_from is None else grad_from
    if engine == "static":
        if mode != "self":
            raise ValueError(f"the static rollout is Self Forcing's own (mode 'self'), not {mode!r}")
        if static is None:
            from .static_rollout import StaticRollout

            static = StaticRollout(student, real.shape[0], real.device, real.dtype)
        noise = (context_noise, idle_noise)
        return static(real, actions, context, levels, exit_index, g, grad, *noise, grad_from)
    cache = RingKVCache(student.cfg, batch=real.shape[0], device=real.device, dtype=real.dtype)
    if engine == "reference":  # the spec
        attn = KernelAttention(student.rope, cache, cached_attention)
    else:  # play's arithmetic, with no in-place writes under autograd
        attn = CachedAttention(student.rope, cache, student.cfg.chunk, out_of_place=True)
    passes = EagerPasses(student, cache, attn, levels)
    out = roll_chunks(
        passes, real, actions, context, exit_index, g, mode, grad, grad_from, context_noise, idle_noise
    )
    return torch.cat(out, 1)


def roll_chunks(
    passes,
    real,
    actions,
    context: int,
    exit_index: int,
    g,
    mode: str,
    grad: bool,
    grad_from: int,
    context_noise: float,
    idle_noise,
) -> list:
    """Algorithm 1's loop over a clip's chunks, the same for every engine, which gives the passes:
    `passes.write(x, a, f0, level, noise)` the cache pass of frames f0.. (x (B, k, ...)) at `level` (a
    float or one per row), drawing noise() first when the level draws any (`draws_noise`);
    `passes.chunk(a, f0, exit_index, grad, draw)` the chunk at f0 from its first noise to its exit step's
    output, with a gradient when `grad`, each of its draws (its noise, then one per re-noising) by draw().
    Returns [the real context, then each chunk's output]."""
    cfg = passes.cfg
    Fr, k = real.shape[1], cfg.chunk
    chunk_noise = lambda: randn_like(real[:, :k], g)  # noqa: E731  (every draw is one chunk's shape)
    # the real context, written as play writes its start frames: at context_noise whatever their keys (the
    # idle level is for the chunks the student draws at rest: a real frame has no error to drown)
    for f0 in range(0, context, k):
        passes.write(real[:, f0 : f0 + k], actions[:, f0 : f0 + k], f0, context_noise, chunk_noise)
    out = [real[:, :context]]
    redo = sink_rewrite_frame(cfg)  # the sinks written again at cfg.sink_noise once they leave the window
    for f0 in range(context, Fr, k):
        a = actions[:, f0 : f0 + k]
        if redo is not None and f0 >= redo:
            sinks = torch.cat(out, 1)[:, : cfg.sinks].detach()
            for g0 in range(0, cfg.sinks, k):
                passes.write(
                    sinks[:, g0 : g0 + k], actions[:, g0 : g0 + k], g0, float(cfg.sink_noise), chunk_noise
                )
            redo = None
        x0 = passes.chunk(a, f0, exit_index, grad and f0 + k > grad_from, chunk_noise)
        out.append(x0)
        # the cache pass (Algorithm 1 line 9 / Algorithm 2 line 9), without gradient
        if mode == "diffusion":  # diffusion forcing: real frames at a random level
            level, ctx = float(rand((1,), g, real.device)), real[:, f0 : f0 + k]
        else:  # self: the student's own output; teacher forcing: the real frames
            level = context_levels(context_noise, idle_noise, a)
            ctx = x0.detach() if mode == "self" else real[:, f0 : f0 + k]
        passes.write(ctx, a, f0, level, chunk_noise)
    return out


class EagerPasses:
    """`roll_chunks`' passes run one after another in PyTorch, through `attn` over `cache`."""

    def __init__(self, student: CausalDiT, cache: RingKVCache, attn, levels):
        self.student, self.cfg, self.cache, self.attn, self.levels = student, student.cfg, cache, attn, levels

    def write(self, x, a, f0: int, level, noise) -> None:
        write_context(self.student, x, a, self.cache, f0, noise, level, self.attn)

    def chunk(self, a, f0: int, exit_index: int, grad: bool, draw):
        x, levels = draw(), self.levels
        for j, t in enumerate(levels):
            last = j == exit_index
            with torch.set_grad_enabled(grad and last):
                pred = self.student.forward_cached(x, t, a, self.cache, f0, attn=self.attn)
                x0 = to_x0(pred, x, t, self.cfg.prediction)
            if last:
                break
            x = add_noise(x0.detach(), draw(), levels[j + 1])
        return x0


class SelfForcingStage(Stage):
    name = "self-forcing"

    def __init__(
        self,
        cfg: ModelConfig,
        latents_root,
        teacher: CausalDiT,
        student: CausalDiT,
        device,
        seed=0,
        clip_frames=TEACHER["clip_frames"],
        context=TEACHER["context"],
        guidance=TEACHER["guidance"],
        rollout_mode: str = "self",
        lr_generator=DEFAULTS["lr_generator"],
        lr_critic=DEFAULTS["lr_critic"],
        gen_every=DEFAULTS["gen_every"],
        rollout_frames: int | None = None,
        idle_rollouts: float = DEFAULTS["idle_rollouts"],
        idle_guidance: float | None = DEFAULTS["idle_guidance"],
        stop_weight: float = 0.0,
        critic_warmup: int = 0,
        stop_guidance: float | None = None,
        rollout_engine: str = "auto",
    ):
        if rollout_engine not in ENGINES:
            raise ValueError(f"rollout engine must be one of {ENGINES}, got {rollout_engine!r}")
        self.rollout_engine = rollout_engine
        self._static = None  # the StaticRollout of the last batch size, and whether it has run once
        self._static_ran = False
        self.static_check: dict | None = None  # the static rollout's check at its latest batch size
        if not 0.0 <= idle_rollouts <= 1.0:
            raise ValueError(f"idle rollouts must be a share in [0, 1], got {idle_rollouts}")
        self.idle_rollouts = float(idle_rollouts)
        if idle_guidance is not None and not idle_guidance >= 1.0:
            raise ValueError(f"idle guidance must be >= 1 (1: no guidance), got {idle_guidance}")
        self.idle_guidance = guidance if idle_guidance is None else float(idle_guidance)  # None: the keys'
        self.rollout_frames = rollout_frames or clip_frames
        if self.rollout_frames < clip_frames:
            raise ValueError(f"rollout frames ({self.rollout_frames}) must be >= the clip ({clip_frames})")
        super().__init__(LatentWindows(latents_root, self.rollout_frames), seed, device)
        if rollout_mode not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {ROLLOUTS}, got {rollout_mode!r}")
        check_whole_chunks(cfg, context=context, clip_frames=clip_frames, rollout_frames=self.rollout_frames)
        self.stop_weight = float(stop_weight)  # the stops counted over the frames the student rolls out
        self.draw_by_stops(
            latents_root, self.stop_weight, first=context, option="--rollout-stop-weight", what="rollouts"
        )
        self.stop_scale = self.stop_guidance(latents_root, guidance, stop_guidance)  # --stop-guidance
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.critic = copy.deepcopy(teacher).train().requires_grad_(True)
        self.student = student.to(device).train().requires_grad_(True)
        self.nets = {"critic": self.critic, "generator": self.student}
        self.frozen = {"teacher": self.teacher}
        self.cfg, self.clip_frames, self.context, self.guidance = cfg, clip_frames, context, guidance
        self.mode, self.gen_every = rollout_mode, gen_every
        if critic_warmup < 0:
            raise ValueError(f"critic warm-up must be >= 0 steps, got {critic_warmup}")
        self.critic_warmup = int(critic_warmup)  # the first steps train the critic alone
        self.lrs = {"generator": lr_generator, "critic": lr_critic}
        self.levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
        self.layout = Layout.clip(clip_frames, causal=False, device=device)

    def optim(self, name):
        return dict(lr=self.lrs[name], betas=(0.0, 0.999), weight_decay=0.01)

    def exit_index(self, step: int) -> int:
        """Uniform over the T levels; a function of (seed, step) only, so every rank draws the same."""
        g = torch.Generator().manual_seed(self.seed * 7919 + step)
        return int(torch.randint(len(self.levels), (1,), generator=g, device="cpu"))  # drawn on the host

    def settings(self) -> dict:
        return (
            {
                "rollout": self.mode,
                "rollout_frames": self.rollout_frames,
                "clip_frames": self.clip_frames,
                "context": self.context,
                "lr": dict(self.lrs),
                "gen_every": self.gen_every,
                "guidance": self.guidance,
                "idle_guidance": self.idle_guidance,
                "idle_rollouts": self.idle_rollouts,
                "context_noise": self.cfg.context_noise,
                "rollout_engine": self.engine_for(self.device),
            }
            | ({"static_check": self.static_check} if self.static_check else {})
            | ({} if (idle := self.cfg.context_noise_idle) is None else {"context_noise_idle": idle})
            | (
                {}
                if (rest := self.cfg.context_noise_rest) is None
                else {"context_noise_rest": rest, "rest_after": self.cfg.rest_after}
            )
            | ({} if (sink := self.cfg.sink_noise) is None else {"sink_noise": sink})
            | ({"stop_weight": self.stop_weight} if self.stop_weight else {})
            | ({"stop_guidance": self.stop_scale} if self.stops is not None else {})
            | ({"critic_warmup": self.critic_warmup} if self.critic_warmup else {})
        )

    def engine_for(self, device) -> str:
        """The rollout's engine on `device`: static (auto on a CUDA GPU, the student's own rollout only) or
        cached."""
        engine = self.rollout_engine
        if engine == "auto":
            engine = "static" if torch.device(device).type == "cuda" else "cached"
        return engine if self.mode == "self" else "cached"

    def _rollout(self, real, actions, exit_index, g, grad, step: int = 0):
        """Algorithm 1's rollout with the stage's engine. The static one is made per batch size, and its
        first clip, and one every STATIC_CHECK_EVERY steps after (graphs that read stale weights would
        differ only once the weights have moved), is checked against the cached engine's from the same
        draws (the relative RMS difference of the first STATIC_CHECK_FRAMES frames drawn, kept in
        `static_check` with the whole clip's); if it fails to run (a GPU that will
        not capture) or differs by more than STATIC_TOLERANCE, the stage says so in one line and goes on
        with the cached engine. Passes under a dispatch mode (the FLOP counter) run eager, where every
        kernel is seen."""
        engine = self.engine_for(real.device)
        if engine == "static" and _dispatch_mode_active():
            engine = "cached"
        cfg = self.cfg
        # DMD reads the last clip-length window, its first `context` frames detached: the frames before
        # carry no gradient to any loss, so their chunks are rolled out without one
        scored = real.shape[1] - self.clip_frames + self.context
        kw = dict(
            mode=self.mode,
            grad=grad,
            context_noise=cfg.context_noise,
            idle_noise=cfg.context_noise_idle,
            grad_from=scored,
        )
        args = (self.student, real, actions, self.context, self.levels, exit_index, g)
        if engine == "cached":
            return rollout(*args, **kw)
        from .static_rollout import StaticRollout

        B = real.shape[0]
        if self._static is None or self._static.batch != B:
            self._static = None  # its buffers and graphs go before the next are made
            self._static = StaticRollout(self.student, B, real.device, real.dtype)
            self._static_ran = False
        if self._static_ran and not (step and step % STATIC_CHECK_EVERY == 0):
            return rollout(*args, engine="static", static=self._static, **kw)
        state = g.get_state()
        try:
            video = rollout(*args, engine="static", static=self._static, **kw)
            after = g.get_state()
            g.set_state(state)
            with torch.no_grad():
                ref = rollout(*args, **(kw | {"grad": False})).float()
            g.set_state(after)
            # judged on the first frames drawn, before bf16's rounding has compounded along the clip (a
            # stale weight or buffer shows from the first); the whole clip's difference is kept beside it
            first = slice(self.context, self.context + STATIC_CHECK_FRAMES)
            err = _relative_rms(video.detach()[:, first], ref[:, first])
            whole = _relative_rms(video.detach(), ref)
            if not err <= STATIC_TOLERANCE:
                raise RuntimeError(f"its clip differs from the cached engine's by {err:.3g} (relative RMS)")
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 (any failure of the graphs: the eager rollout instead)
            print(f"self-forcing: the static rollout failed ({type(e).__name__}: {e}); eager instead")
            self.rollout_engine, self._static = "cached", None
            self.static_check = {"batch": B, "failed": f"{type(e).__name__}: {e}"}
            g.set_state(state)
            return rollout(*args, **kw)
        if not self._static_ran:
            print(f"self-forcing: the static rollout at {B} rows against eager: relative RMS {err:.1e}")
        self._static_ran = True
        last = self.static_check or {}
        worst = max(err, last.get("worst_relative_rms", 0.0)) if last.get("batch") == B else err
        checks = last.get("checks", 0) + 1 if last.get("batch") == B else 1
        self.static_check = {"batch": B, "checks": checks, "worst_relative_rms": worst, "relative_rms": err}
        self.static_check["relative_rms_whole_clip"] = whole
        return video

    def real_guidance(self, actions, stopped=None):
        """The teacher's guidance in DMD's real score: --guidance, or per frame (B, F) with
        --idle-guidance on the frames where no key is pressed (the no-key action is all zeros) and
        --stop-guidance on those whose key the game refused in the recording (`stopped`, (B, F) bool)."""
        return frame_guidance(actions, self.guidance, self.idle_guidance, self.stop_scale, stopped)

    def loss(self, batch, step):
        g = self.noise_generator(batch)
        real, actions = batch["latents"], batch["actions"]
        B, Fr, c = real.shape[0], self.clip_frames, self.context  # the scored window: Fr frames
        if self.idle_rollouts > 0:  # these rollouts: no key after the context (the no-key action is 0)
            still = rand((B,), g, real.device) < self.idle_rollouts
            actions = torch.cat([actions[:, :c], actions[:, c:] * (~still)[:, None, None]], 1)
        gen_step = step % self.gen_every == 0 and step >= self.critic_warmup
        s = self.exit_index(step)
        video = self._rollout(real, actions, s, g, gen_step, step)
        # DMD scores the last clip-length window (the teacher's clip); its first c frames are its clean
        # context: the real frames when the rollout is one clip long, else the student's own (detached)
        window = video[:, -Fr:]
        actions = actions[:, -Fr:]
        stopped = self.stopped(batch)
        stopped = None if stopped is None else stopped[:, -Fr:]
        ctx, x = window[:, :c].detach(), window[:, c:]
        ctx_t = torch.zeros(B, c, device=real.device)

        def noisy(t, noise):
            frames = torch.cat([ctx, add_noise(x.detach(), noise, t[:, None])], 1)
            return frames, torch.cat([ctx_t, t[:, None].expand(B, Fr - c)], 1)

        # the critic: flow matching on the student's (detached) outputs
        t_c = dmd_timesteps(B, g, real.device)
        noise_c = randn_like(x, g)
        inp, tt = noisy(t_c, noise_c)
        pred = self.critic(inp, tt, actions, self.layout)[:, c:]
        target = flow_target(x.detach(), noise_c) if self.cfg.prediction == "flow" else x.detach()
        losses = {"critic": F.mse_loss(pred.float(), target.float())}
        logs = {"exit_step": s + 1}
        if gen_step:
            t = dmd_timesteps(B, g, real.device)
            inp, tt = noisy(t, randn_like(x, g))
            scale = self.real_guidance(actions, stopped)
            with torch.no_grad():
                x0_real = predict_x0(self.teacher, inp, tt, actions, self.layout, scale)
                x0_real = x0_real[:, c:]
                x0_fake = predict_x0(self.critic, inp, tt, actions, self.layout, 1.0)[:, c:]
            losses["generator"] = dmd_loss(x, x0_real, x0_fake)
            logs["dmd_gap"] = (x0_fake - x0_real).abs().mean()
        return losses, logs
