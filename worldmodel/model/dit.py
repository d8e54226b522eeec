"""The action-conditioned causal DiT: the network only (no loss, no sampling, no I/O).

Latent frames are cut into p x p patches, N tokens per frame. Every frame carries one
conditioning vector c = embed(t) + embed(action) that drives adaLN-zero modulation in
every block (Peebles & Xie 2023; the action enters like Oasis's). With cfg.pos_embed a learned
table of each token's place in the frame is added to its embedding (rotary positions are relative
and cannot tell the frame's centre, where a game draws its player). Attention uses QK-norm
and 3-D rotary positions (time, row, column), and is block-causal and windowed with sink
frames (worldmodel/model/attention.py) or bidirectional (the teacher and the critic are this same
class with `Layout.clip(F, causal=False)`).

Two ways to run it, which give the same numbers (tests/test_equivalence.py):
  forward(x, t, actions, layout)           whole clips under the mask (training)
  forward_cached(x, t, actions, cache, f0)  one chunk against the rolling KV cache (play)

Shapes: B batch, F frames, N tokens per frame, D width, H heads, C latent channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ClipAttention, KernelAttention, Layout
from .config import ModelConfig
from .diffusion import on_device
from .kv_cache import RingKVCache
from .rope import Rope3D


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled to [0, 1000] like the diffusion literature)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.dim, cfg.head_dim
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.q_norm = nn.RMSNorm(hd, eps=1e-6)
        self.k_norm = nn.RMSNorm(hd, eps=1e-6)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.ada = nn.Linear(d, 6 * d)  # adaLN-zero: shift, scale, gate for attention and MLP

    def forward(self, x, cond, attend, kv_only: bool = False, mod=None):
        """x (B, F, N, D), cond (B, F, D) already SiLU'd; attend(q, k, v) -> (B, H, F*N, hd).
        mod: self.ada(cond)[:, :, None] when already computed (then cond is not read).

        Written with fused ops (addcmul, one RMS norm for q and k): at play-time sizes on a CPU,
        the number of ops, not the FLOPs, sets the speed."""
        B, Fr, N, D = x.shape
        H = self.heads
        if mod is None:
            mod = self.ada(cond)[:, :, None]  # (B, F, 1, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # (B, F, 1, D) each
        h = torch.addcmul(shift1, self.norm1(x), 1 + scale1)
        qkv = self.qkv(h).view(B, Fr * N, 3, H, D // H)
        qk_w = torch.stack([self.q_norm.weight, self.k_norm.weight])[:, None]  # (2, 1, hd)
        qk = F.rms_norm(qkv[:, :, :2], (D // H,), eps=self.q_norm.eps) * qk_w  # QK-norm, (B, L, 2, H, hd)
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, F*N, hd) each
        v = qkv[:, :, 2].transpose(1, 2)
        o = attend(q, k, v)  # rotary positions are applied by attend
        if kv_only:  # the cache pass's last layer: its K/V are written, its output is never used
            return x
        x = torch.addcmul(x, gate1, self.proj(o.transpose(1, 2).reshape(B, Fr, N, D)))
        return torch.addcmul(x, gate2, self.mlp(torch.addcmul(shift2, self.norm2(x), 1 + scale2)))


class CausalDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, p, c = cfg.dim, cfg.patch, cfg.ae.latent_channels
        self.patch_embed = nn.Linear(c * p * p, d)
        # absolute spatial positions (cfg.pos_embed): one learned vector per token of a frame
        self.pos_embed = nn.Parameter(torch.zeros(cfg.tokens_per_frame, d)) if cfg.pos_embed else None
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.a_embed = nn.Sequential(nn.Linear(cfg.action_space.size, d), nn.SiLU(), nn.Linear(d, d))
        self.null_action = nn.Parameter(torch.zeros(d))  # stands in for dropped actions (CFG)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, c * p * p)
        self.rope = Rope3D(cfg)
        self.reset_parameters()

    def reset_parameters(self, zero_init: bool = True):
        """Xavier everywhere; adaLN modulations and the output zeroed (adaLN-zero) unless zero_init=False,
        which gives random weights whose outputs depend on everything (for tests and benchmarks)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.null_action, std=0.02)
        if self.pos_embed is not None:  # zeros: a network given the table starts as one without it
            nn.init.zeros_(self.pos_embed) if zero_init else nn.init.normal_(self.pos_embed, std=0.02)
        for lin in [b.ada for b in self.blocks] + [self.final_ada, self.out]:
            if zero_init:
                nn.init.zeros_(lin.weight)
            else:
                nn.init.normal_(lin.weight, std=0.02)

    # -- tokens ------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, F, N, C*p*p)"""
        B, Fr, C, h, w = x.shape
        p = self.cfg.patch
        x = x.reshape(B, Fr, C, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, Fr, (h // p) * (w // p), C * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, N, C*p*p) -> (B, F, C, h, w)"""
        B, Fr = x.shape[:2]
        p, (rows, cols), C = self.cfg.patch, self.cfg.grid, self.cfg.ae.latent_channels
        x = x.reshape(B, Fr, rows, cols, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, Fr, C, rows * p, cols * p)

    def condition(
        self, t: torch.Tensor, actions: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """t (B, F) in [0, 1], actions (B, F, A), drop (B, F) bool (True = no action) -> SiLU(c) (B, F, D)."""
        a = self.a_embed(actions.to(self.null_action.dtype))
        if drop is not None:
            a = torch.where(drop[..., None], self.null_action.to(a.dtype), a)
        c = self.t_embed(timestep_embedding(t, 256).to(a.dtype)) + a
        return F.silu(c)

    def modulations(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """SiLU(c) (B, F, D) -> every block's adaLN modulation (B, F, 1, 6D), then the final layer's
        (B, F, 1, 2D): what `_run` computes from cond, for a caller that computes them for several
        passes at once (the compiled backend: one matmul per layer per chunk, not per pass)."""
        return [lin(cond)[:, :, None] for lin in [b.ada for b in self.blocks] + [self.final_ada]]

    def _run(self, x, t, actions, drop, attend_for, kv_only_last=False, mods=None):
        """mods: `modulations(condition(t, actions, drop))` when already computed (then t, actions and
        drop are not read)."""
        B, Fr = x.shape[:2]
        if mods is None:
            t = on_device(t, x, torch.float32)
            if t.dim() == 0:
                t = t.expand(B, Fr)
            elif t.dim() == 1:
                t = t[:, None].expand(B, Fr)
            cond = self.condition(t, actions, drop)
            mods = [None] * (len(self.blocks) + 1)
        else:
            cond = None
        h = self.patch_embed(self.patchify(x))  # (B, F, N, D)
        if self.pos_embed is not None:
            h = h + self.pos_embed.to(h.dtype)
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            h = block(h, cond, attend_for(i), kv_only=kv_only_last and last, mod=mods[i])
        if kv_only_last:
            return None
        final = self.final_ada(cond)[:, :, None] if mods[-1] is None else mods[-1]
        shift, scale = final.chunk(2, dim=-1)
        return self.unpatchify(self.out(self.final_norm(h) * (1 + scale) + shift))

    # -- whole clips -------------------------------------------------------------------------
    def forward(
        self, x, t, actions, layout: Layout | None = None, action_drop=None, attn_backend: str = "auto"
    ):
        """x (B, F, C, h, w) latents at noise levels t (B, F) (or (B,) or scalar), actions (B, F, A).

        Returns the prediction (flow or x0, cfg.prediction) (B, F, C, h, w). `layout` describes
        the frames (default: frames 0..F-1 under the causal mask)."""
        cfg = self.cfg
        layout = layout or Layout.clip(x.shape[1], device=x.device)
        if layout.num_frames != x.shape[1]:
            raise ValueError(f"layout has {layout.num_frames} frames, x has {x.shape[1]}")

        # tables and masks built once for the layout, then shared by every layer (and later forwards)
        key = (cfg.chunk, cfg.window, cfg.sinks, attn_backend, self.rope)
        attend = layout.built.get(key)
        if attend is None:
            attend = layout.built[key] = ClipAttention(
                layout, cfg.chunk, cfg.window, cfg.sinks, self.rope, attn_backend
            )
        return self._run(x, t, actions, action_drop, lambda i: attend)

    # -- one chunk against the cache ---------------------------------------------------------
    def forward_cached(
        self, x, t, actions, cache: RingKVCache, f0, write: bool = False, attn=None, action_drop=None
    ):
        """x (B, k, C, h, w): the chunk holding frames f0..f0+k-1, at noise level t (f0: an int, or a
        (B,) tensor of each row's own with a RowRing and RowCachedAttention, runtime/batch.py).

        Attends to the cache (sinks + window) and to itself. write=True is the cache pass
        (Algorithm 2, line 9): each layer stores the chunk's K/V in the ring after attending,
        and no output is computed (returns None). `attn` is an engine bound to `cache`
        (worldmodel.model.attention.CachedAttention, or KernelAttention over the reference or the
        Triton kernel); by default the reference. action_drop (B, k) bool: rows without actions (the
        unguided half of a guided causal sampler, model/sampling.py's `sample_causal`)."""
        attn = attn or KernelAttention(self.rope, cache)
        attn.prepare(f0)
        if isinstance(f0, torch.Tensor):  # one frame index per row (runtime/batch.py's RowRing)
            frames = f0[:, None] + torch.arange(x.shape[1], device=f0.device)
        else:
            frames = list(range(f0, f0 + x.shape[1]))
        last = len(self.blocks) - 1

        def attend_for(layer):
            def attend(q, k, v):
                return attn(layer, q, k, v, frames, write, need_output=not (write and layer == last))

            return attend

        out = self._run(x, t, actions, action_drop, attend_for, kv_only_last=write)
        if write:
            cache.commit(frames)
        return out

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
