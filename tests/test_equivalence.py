"""The rolling KV cache computes exactly what one full forward under the block-causal windowed
mask computes (DESIGN.md sections 3-4), and its positions never grow.

Every test uses random weights with every layer live (no adaLN-zero), fp32, on the CPU.
"""

import pytest
import torch

from kernels.reference import cached_attention
from worldmodel.model.attention import CachedAttention, KernelAttention, Layout
from worldmodel.model.config import AutoencoderConfig, ModelConfig
from worldmodel.model.dit import CausalDiT
from worldmodel.model.kv_cache import RingKVCache

ENGINES = {
    "reference": lambda dit, cache: KernelAttention(dit.rope, cache, cached_attention),
    "session": lambda dit, cache: CachedAttention(dit.rope, cache, dit.cfg.chunk),
}


def small_cfg(chunk=1, window=3, sinks=1, depth=2, **kw) -> ModelConfig:
    """16x16 frames -> 8x8 latents -> 16 tokens per frame; two layers of width 48."""
    return ModelConfig(
        name="test",
        frame_height=16,
        frame_width=16,
        ae=AutoencoderConfig(latent_channels=4, channels=(8, 16)),
        patch=2,
        dim=48,
        heads=2,
        depth=depth,
        chunk=chunk,
        window=window,
        sinks=sinks,
        **kw,
    )


def make_dit(cfg, seed=0) -> CausalDiT:
    torch.manual_seed(seed)
    dit = CausalDiT(cfg)
    dit.reset_parameters(zero_init=False)
    return dit.eval()


def clip_inputs(cfg, num_frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (1, num_frames, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    z = torch.randn(shape, generator=g)  # clean frames (the context)
    x = torch.randn(shape, generator=g)  # noisy frames being denoised
    t = torch.rand(1, num_frames, generator=g) * 0.9 + 0.05
    actions = (torch.rand(1, num_frames, cfg.action_space.size, generator=g) < 0.4).float()
    return z, x, t, actions


def full_forward(dit, z, x, t, actions, backend="sdpa"):
    """Teacher-forcing layout [clean context at t = 0, noisy targets]; returns the targets' outputs."""
    F = z.shape[1]
    out = dit(
        torch.cat([z, x], 1),
        torch.cat([torch.zeros_like(t), t], 1),
        torch.cat([actions, actions], 1),
        layout=Layout.teacher_forcing(F),
        attn_backend=backend,
    )
    return out[:, F:]


def stepwise(dit, z, x, t, actions, engine):
    """Chunk by chunk through the ring: denoise the chunk, then write its clean frames (Algorithm 2)."""
    cfg, F = dit.cfg, z.shape[1]
    cache = RingKVCache(cfg)
    attn = ENGINES[engine](dit, cache)
    outs = []
    for f0 in range(0, F, cfg.chunk):
        c = slice(f0, f0 + cfg.chunk)
        outs.append(dit.forward_cached(x[:, c], t[:, c], actions[:, c], cache, f0, attn=attn))
        assert dit.forward_cached(z[:, c], 0.0, actions[:, c], cache, f0, write=True, attn=attn) is None
    return torch.cat(outs, 1), cache


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("chunk,window,sinks", [(1, 3, 0), (1, 3, 2), (3, 6, 0), (3, 6, 2)])
@torch.no_grad()
def test_cache_equals_full_forward(chunk, window, sinks, engine):
    cfg = small_cfg(chunk, window, sinks)
    dit = make_dit(cfg)
    F = 3 * window + 2 * chunk  # the ring wraps more than twice
    z, x, t, actions = clip_inputs(cfg, F)
    full = full_forward(dit, z, x, t, actions)
    step, cache = stepwise(dit, z, x, t, actions, engine)
    assert full.abs().mean() > 0.05, "outputs too small for the comparison to mean anything"
    err = (full - step).abs().max().item()
    assert err <= 1e-4, f"cached output differs from the full forward by {err:.2e}"
    # the ring holds the sinks and the last `window` frames, and nothing else
    held = sorted(f for f in cache.slot_frames.tolist() if f >= 0)
    assert held == list(range(sinks)) + list(range(F - window, F))


@pytest.mark.skipif(not hasattr(torch.nn.attention, "flex_attention"), reason="no FlexAttention")
@torch.no_grad()
def test_flex_backend_matches_sdpa():
    cfg = small_cfg(chunk=1, window=3, sinks=1)
    dit = make_dit(cfg)
    z, x, t, actions = clip_inputs(cfg, 8)
    try:
        flex = full_forward(dit, z, x, t, actions, backend="flex")
    except Exception as e:  # FlexAttention on the CPU needs a working torch.compile toolchain
        pytest.skip(f"FlexAttention does not run here: {type(e).__name__}")
    sdpa = full_forward(dit, z, x, t, actions, backend="sdpa")
    assert (flex - sdpa).abs().max().item() <= 1e-4


@pytest.mark.parametrize("chunk,window,sinks", [(1, 3, 2), (3, 6, 1)])
@torch.no_grad()
def test_windowed_geometry(chunk, window, sinks):
    """A context frame changes a chunk's output iff it is a sink or one of the `window` frames before
    the chunk; never a later frame. Checked on the full forward, which the cache matches (above).
    One layer: with more, a frame also reaches further back through the K/V of the frames it saw."""
    cfg = small_cfg(chunk, window, sinks, depth=1)
    dit = make_dit(cfg)
    F = 3 * window
    z, x, t, actions = clip_inputs(cfg, F)
    base = full_forward(dit, z, x, t, actions)
    q0 = 2 * window  # a query chunk well past the window's first wrap
    q = slice(q0, q0 + chunk)
    for f in range(F):
        z2 = z.clone()
        z2[:, f] += 1.0
        changed = (full_forward(dit, z2, x, t, actions)[:, q] - base[:, q]).abs().max().item() > 1e-6
        visible = f < sinks or q0 - window <= f < q0  # a target never sees its own clean copy
        assert changed == visible, f"frame {f} {'changes' if changed else 'does not change'} chunk at {q0}"


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("chunk,window,sinks", [(1, 8, 1), (1, 4, 0), (3, 6, 3)])
@torch.no_grad()
def test_rolling_positions_never_grow(chunk, window, sinks, engine):
    """The same cache content gives the same output at frame ~40 and at frame ~100 000."""
    cfg = small_cfg(chunk, window, sinks)
    dit = make_dit(cfg)
    n = sinks + window + chunk
    z, x, t, actions = clip_inputs(cfg, n)

    def play_at(f0):
        # the sinks at frames 0.., then the window's frames f0-W..f0-1 (the frames between never existed)
        frames = list(range(sinks)) + list(range(f0 - window, f0))
        cache = RingKVCache(cfg)
        attn = ENGINES[engine](dit, cache)
        for i in range(0, len(frames), chunk):
            c = slice(i, i + chunk)
            dit.forward_cached(z[:, c], 0.0, actions[:, c], cache, frames[i], write=True, attn=attn)
        c = slice(n - chunk, n)
        return dit.forward_cached(x[:, c], t[:, c], actions[:, c], cache, f0, attn=attn), cache

    early, c1 = play_at(42)
    late, c2 = play_at(100_002)
    assert not torch.equal(c1.slot_frames, c2.slot_frames)  # other frames, in other slots
    assert early.abs().mean() > 0.05
    err = (early - late).abs().max().item()
    assert err <= 1e-5, f"output at frame 100k differs from frame 42 by {err:.2e}"


@pytest.mark.parametrize("chunk,window,sinks", [(1, 4, 1), (2, 4, 0), (1, 3, 2)])
def test_the_hosts_record_of_the_ring_is_the_devices(chunk, window, sinks):
    """RingKVCache.all_visible (what the reference is told, so that a GPU need not be asked) agrees
    with slot_offsets' reading of slot_frames at every chunk of a long session and after a reset."""
    from kernels.reference import slot_offsets

    cache = RingKVCache(small_cfg(chunk, window, sinks))
    seen = set()
    for f0 in [*range(0, 20 * chunk, chunk), "reset", *range(0, 6 * chunk, chunk)]:
        if f0 == "reset":
            cache.reset()
            continue
        visible = slot_offsets(cache.slot_frames, cache.sinks, f0)[1]
        assert cache.all_visible(f0) == bool(visible.all()), f0
        assert cache.held == cache.slot_frames.tolist()
        seen.add(cache.all_visible(f0))
        cache.commit(list(range(f0, f0 + chunk)))
    assert seen == {True, False}


@pytest.mark.parametrize("engine", list(ENGINES))
@torch.no_grad()
def test_cache_equals_full_forward_with_the_position_table(engine):
    """cfg.pos_embed adds one learned vector per token of a frame: the ring still gives the full
    forward's numbers, and the table is used (another table, other outputs)."""
    cfg = small_cfg(1, 3, 1, pos_embed=True)
    dit = make_dit(cfg)
    assert dit.pos_embed.shape == (cfg.tokens_per_frame, cfg.dim) and dit.pos_embed.abs().max() > 0
    z, x, t, actions = clip_inputs(cfg, 3 * 3 + 2)
    full = full_forward(dit, z, x, t, actions)
    step, _ = stepwise(dit, z, x, t, actions, engine)
    assert (full - step).abs().max().item() <= 1e-4
    dit.pos_embed.mul_(-1)
    assert (full_forward(dit, z, x, t, actions) - full).abs().max() > 1e-2


@torch.no_grad()
def test_a_zero_position_table_is_the_network_without_one(tmp_path):
    """A run that adds the table to weights made without it (a continued checkpoint) starts as the
    same function; configs and checkpoints written before the table load without it; a checkpoint
    with it keeps it."""
    from worldmodel.model.checkpoint import WorldModel, load_checkpoint, save_checkpoint

    cfg = small_cfg(1, 3, 1)
    old = make_dit(cfg)
    new = CausalDiT(small_cfg(1, 3, 1, pos_embed=True)).eval()
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert (
        missing == ["pos_embed"]
        and not unexpected
        and torch.equal(new.pos_embed, torch.zeros_like(new.pos_embed))
    )
    z, x, t, actions = clip_inputs(cfg, 5)
    assert torch.equal(full_forward(old, z, x, t, actions), full_forward(new, z, x, t, actions))

    d = cfg.to_dict()
    assert (
        d["pos_embed"] is False
        and ModelConfig.from_dict({k: v for k, v in d.items() if k != "pos_embed"}) == cfg
    )
    with pytest.raises(ValueError, match="pos_embed"):
        ModelConfig.from_dict(dict(d, pos_embed="yes"))
    world = WorldModel(small_cfg(1, 3, 1, pos_embed=True))
    world.dit.pos_embed.normal_()
    back = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", world))[0]
    assert back.cfg.pos_embed and torch.equal(back.dit.pos_embed, world.dit.pos_embed)
    without = WorldModel(cfg)
    back = load_checkpoint(save_checkpoint(tmp_path / "old.safetensors", without))[0]
    assert not back.cfg.pos_embed and back.dit.pos_embed is None
