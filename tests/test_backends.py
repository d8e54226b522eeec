"""The static (explicit-tensor) pass, and the compiled and ONNX Runtime backends on it, against eager."""

import copy
import json

import numpy as np
import pytest
import torch

from kernels.reference import slot_offsets
from worldmodel import WorldSession
from worldmodel.model.attention import KernelAttention
from worldmodel.model.sampling import START_CONTEXT
from worldmodel.runtime.backends import BackendOptions
from worldmodel.runtime.backends.static_step import StaticStep

from .conftest import load_tool

MICRO = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


def session(backend="eager", onnx_dir=None, options=None, **changes):
    kw = {"onnx_dir": onnx_dir} if onnx_dir else {}
    return WorldSession.from_preset(
        "tiny",
        seed=0,
        device="cpu",
        backend=backend,
        config_changes={**MICRO, **changes},
        options=options,
        **kw,
    )


def next_chunk(s) -> int:
    """Where the session's next chunk lies in the cache's time: after the frames it has shown, those
    still pending, and those its reset wrote before frame 0."""
    return s.frame_index + 1 + len(s._pending) + s._hidden


@pytest.mark.parametrize("kernel", [False, True])
def test_static_step_rewrites_give_the_same_numbers(kernel):
    """The compiled backend's rewrites of a pass (modulated: every pass's adaLN modulations made at
    once by `modulations`; pointwise_rotation: no matmul in the rotary turns) leave its output and
    the cache pass's K/V as they were, with the mask argument and with the fused kernel."""
    if kernel:
        pytest.importorskip("triton")
        from kernels import cached_attention

        if not cached_attention.available("cpu"):
            pytest.skip("TRITON_INTERPRET is not set")
    s = session(chunk=2, sinks=2)
    s.reset(seed=0)
    for _ in range(7):  # a wrapped ring
        s.step({"up"})
    dit, cfg, c = s.model.dit, s.cfg, s.cache
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, cfg.chunk, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, generator=g)
    a = torch.rand(1, cfg.chunk, s.action_space.size, generator=g)
    offset, visible = slot_offsets(c.slot_frames, c.sinks, next_chunk(s))
    ring = (c.k, c.v, offset, visible)
    levels = torch.tensor([0.8, 0.6, 0.0])
    for write in (False, True):
        plain = StaticStep(dit, cfg.chunk, write=write, kernel=kernel)
        new = StaticStep(dit, cfg.chunk, write=write, kernel=kernel, modulated=True, pointwise_rotation=True)
        mods = new.modulations(levels, a)
        assert [m.shape for m in mods] == [(3, cfg.chunk, 1, 6 * cfg.dim)] * cfg.depth + [
            (3, cfg.chunk, 1, 2 * cfg.dim)
        ]
        j = 2 if write else 1  # the cache pass at level 0, a denoising pass at 0.6
        ref = plain(x, levels[j : j + 1], a, *ring)
        got = new(x, [m[j : j + 1] for m in mods], *ring)
        for r, o in zip(ref if write else [ref], got if write else [got], strict=True):
            assert (o - r).abs().max() <= 1e-5 * r.abs().max()


@pytest.mark.parametrize(
    "geometry",
    [dict(sinks=1), dict(chunk=2, sinks=2, window=4), dict(sinks=0, window=3), dict(sinks=2, window=3)],
)
def test_merged_pass_equals_the_cache_pass_then_the_next_denoising_pass(geometry):
    """StaticStep(merged=True): chunk c's cache pass and chunk c + 1's first denoising pass as one
    pass over both chunks give what the two passes give one after the other (the first with its
    K/V written into the ring), on empty, filling and wrapped rings. With a full window the sinks
    sit at another time relative to each chunk, which only the sinks' second copy gets right."""
    s = session(**geometry)
    s.reset(seed=0)
    dit, cfg = s.model.dit, s.cfg
    k, S = cfg.chunk, cfg.sinks
    g = torch.Generator().manual_seed(1)
    shape = (1, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    for steps in (0, 1, 2, 3 * (cfg.window + S) + 1):
        for _ in range(steps):
            s.step({"up"})
        c = s.cache
        f = next_chunk(s)
        xc, xn = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        ac, an = (torch.rand(1, k, s.action_space.size, generator=g) for _ in range(2))
        # one after the other: the cache pass at f, its K/V written, then the denoising pass at f + k
        ring_c = copy.deepcopy(c)
        cache_pass = StaticStep(dit, k, write=True, prepared=True)
        ring = cache_pass.prepare(ring_c.k, *slot_offsets(ring_c.slot_frames, S, f), ring_c.v)
        new_k, new_v = cache_pass(xc, torch.tensor([0.1]), ac, *ring)
        frames = list(range(f, f + k))
        ring_c.write_all(frames, new_k, new_v)
        ring_c.commit(frames)
        denoise = StaticStep(dit, k, prepared=True)
        ring = denoise.prepare(ring_c.k, *slot_offsets(ring_c.slot_frames, S, f + k), ring_c.v)
        pred = denoise(xn, torch.tensor([0.8]), an, *ring)
        # merged, on the ring as it was
        merged = StaticStep(dit, k, prepared=True, merged=True)
        geometry = [slot_offsets(c.slot_frames, S, f0) for f0 in (f, f + k)]
        ring = merged.prepare_merged(c.k, c.v, *geometry, S)
        got, got_k, got_v = merged(
            torch.cat([xc, xn], 1), torch.tensor([0.1, 0.8]), torch.cat([ac, an], 1), *ring
        )
        assert (got - pred).abs().max() <= 1e-5 * pred.abs().max()
        torch.testing.assert_close(got_k, new_k, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_v, new_v, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask_in_keys", [False, True])
@pytest.mark.parametrize("geometry", [dict(), dict(chunk=2, sinks=2, window=4), dict(sinks=0, window=3)])
def test_static_step_matches_the_reference(geometry, mask_in_keys):
    """Both passes, at a filling and at a wrapped ring, equal forward_cached over the reference; also
    with the mask carried in extra key channels (mask_in_keys, flash attention's form on a GPU)."""
    s = session(**geometry)
    s.reset(seed=0)
    dit, cfg, c = s.model.dit, s.cfg, s.cache
    g = torch.Generator().manual_seed(1)
    for steps in (0, 3 * (cfg.window + cfg.sinks) + 1):  # the first chunk after the reset; a wrapped ring
        for _ in range(steps):
            s.step(s.action_space.noop())
        f0 = next_chunk(s)
        x = torch.randn(
            1, cfg.chunk, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, generator=g
        )
        a = torch.rand(1, cfg.chunk, s.action_space.size, generator=g)
        offset, visible = slot_offsets(c.slot_frames, c.sinks, f0)
        ref = dit.forward_cached(x, 0.6, a, c, f0, attn=KernelAttention(dit.rope, c))
        got = StaticStep(dit, cfg.chunk, mask_in_keys=mask_in_keys)(
            x, torch.tensor([0.6]), a, c.k, c.v, offset, visible
        )
        assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
        if mask_in_keys and steps == 0:  # a filling ring: some slots hidden, so the mask is at work
            assert not visible.all()

        new_k, new_v = StaticStep(dit, cfg.chunk, write=True, mask_in_keys=mask_in_keys)(
            x, torch.tensor([0.0]), a, c.k, c.v, offset, visible
        )
        dit.forward_cached(x, 0.0, a, c, f0, write=True, attn=KernelAttention(dit.rope, c))
        N = c.tokens_per_frame
        for j in range(cfg.chunk):
            slot = c.slot_of(f0 + j)
            if slot is None:
                continue
            torch.testing.assert_close(
                new_k[:, :, :, j * N : (j + 1) * N], c.k[:, :, :, slot], atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                new_v[:, :, :, j * N : (j + 1) * N], c.v[:, :, :, slot], atol=1e-5, rtol=0
            )


def test_static_step_with_the_kernel_matches_the_reference():
    """StaticStep(kernel=True) (the fused kernel; under the CPU interpreter here) gives the PyTorch
    path's prediction and K/V, past a wrapped ring with sinks and chunks of 2."""
    pytest.importorskip("triton")
    from kernels import cached_attention

    if not cached_attention.available("cpu"):
        pytest.skip("TRITON_INTERPRET is not set")
    s = session(chunk=2, sinks=2, window=4)
    s.reset(seed=0)
    for _ in range(7):
        s.step({"up"})
    cfg, c = s.cfg, s.cache
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, cfg.chunk, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, generator=g)
    a = torch.rand(1, cfg.chunk, s.action_space.size, generator=g)
    offset, visible = slot_offsets(c.slot_frames, c.sinks, next_chunk(s))
    for write in (False, True):
        args = (x, torch.tensor([0.3]), a, c.k, c.v, offset, visible)
        ref = StaticStep(s.model.dit, cfg.chunk, write=write)(*args)
        got = StaticStep(s.model.dit, cfg.chunk, write=write, kernel=True)(*args)
        for r, o in zip(ref if write else [ref], got if write else [got], strict=True):
            assert (o - r).abs().max() <= 1e-5 * r.abs().max()


@pytest.mark.parametrize(
    "attention",
    ["sdpa", "sdpa-mask-in-keys", "kernel", "sdpa-idle", "sdpa-sink", "sdpa-rest", "sdpa-restonly"],
)
def test_compiled_session_plays_like_eager(attention, monkeypatch):
    """backend='compiled' (torch.compile on the CPU; CUDA graphs on a GPU) draws eager's frames, with
    attention by PyTorch ops (the mask given to SDPA, or carried in extra key channels as on a GPU)
    or by the fused kernel (under the CPU interpreter here); "idle": a model whose chunks at rest are
    written at their own level (context_noise_idle), picked from the keys inside the compiled chunk; "sink":
    one whose sinks are written again at sink_noise once they leave the window (at frame 6 here); "rest":
    one with a higher level once a rest is longer than rest_after (the session's count, handed over per
    chunk), through rests that pass it and rests that do not, and "restonly" that level with no level of
    its own for a short rest (on a clean cache: the cache pass draws its noise at every chunk all the
    same, as eager does)."""
    from worldmodel.runtime.backends import compiled as compiled_backend

    keys = attention == "sdpa-mask-in-keys"
    monkeypatch.setattr(compiled_backend, "mask_in_keys_wanted", lambda device: keys)
    kinds = {
        "idle": dict(context_noise=0.1, context_noise_idle=0.4),
        "sink": dict(context_noise=0.1, sink_noise=0.4),
        "rest": dict(context_noise=0.1, context_noise_idle=0.4, context_noise_rest=0.8, rest_after=3),
        "restonly": dict(context_noise_rest=0.8, rest_after=3),
    }
    levels = kinds.get(attention.split("-")[-1], {})
    acts = [{"up"}, {"left"}, set(), {"right", "action"}] * 3
    if "rest_after" in levels:  # chunks of 2: rests of 2, 4, 6 and 8 frames, then 2 and 4 after a key
        acts = [{"up"}] * 2 + [set()] * 8 + [{"left"}] * 2 + [set()] * 4
    attention = attention.split("-")[0]
    if attention == "kernel":
        pytest.importorskip("triton")
        from kernels import cached_attention

        if not cached_attention.available("cpu"):
            pytest.skip("TRITON_INTERPRET is not set")
    options = BackendOptions(compiled_attention=attention)
    e, c = (
        session(chunk=2, sinks=2, pos_embed=True, **levels),
        session(backend="compiled", options=options, chunk=2, sinks=2, pos_embed=True, **levels),
    )
    assert c.generator.at_rest == any(f in levels for f in ("context_noise_idle", "context_noise_rest"))
    assert c.generator.kernel == (attention == "kernel") and c.generator.mask_in_keys == keys
    assert c.backend == "compiled" and e.backend == "eager"
    a, b = [e.reset(seed=2)], [c.reset(seed=2)]
    for act in acts:
        a.append(e.step(act))
        b.append(c.step(act))
    assert np.abs(np.stack(a).astype(int) - np.stack(b).astype(int)).max() <= 2
    # and the ring: a random network's frames hardly show the level a chunk was written at, its keys do
    assert (c.cache.k - e.cache.k).abs().max() <= 1e-3 * e.cache.k.abs().max()


def test_compiled_knobs(monkeypatch):
    """The option compile_mode reaches torch.compile for both passes and rewrites=False builds the
    passes without the rewrites; a mode that would capture CUDA graphs inside the backend's own
    capture, or a misspelt value, is refused by name."""
    from worldmodel.runtime.backends import compiled as cb

    seen = []

    def fake_compile(fn, **kw):
        seen.append(kw)
        return fn

    monkeypatch.setattr(cb.torch, "compile", fake_compile)
    options = BackendOptions(compile_mode="max-autotune-no-cudagraphs", rewrites=False, merge=True)
    s = session(backend="compiled", options=options)
    assert s.generator.merge  # the denoising pass, the cache pass, the merged pass, each compiled
    assert [kw["mode"] for kw in seen] == ["max-autotune-no-cudagraphs"] * 3
    assert not s.generator.rewrites and not s.generator.denoise.modulated
    assert not s.generator.denoise.engine.rot.pointwise
    s.reset(seed=0)
    assert s.step({"up"}).shape == (s.cfg.frame_height, s.cfg.frame_width, 3)
    assert BackendOptions().rewrites and not BackendOptions().merge
    for name, value in [
        ("compile_mode", "max-autotune"),
        ("rewrites", "yes"),
        ("merge", "auto"),
        ("compiled_attention", "flash"),
        ("ort_threads", 0),
    ]:
        with pytest.raises(ValueError, match=f"{name}={value!r}"):
            BackendOptions(**{name: value})


@pytest.mark.parametrize(
    "geometry, repeats",
    [
        (dict(sinks=1, window=3), 1),
        (dict(chunk=2, sinks=2, context_noise=0.1), 1),
        (dict(sinks=1, window=3), 3),
        (dict(sinks=1, window=3, context_noise_idle=0.3), 3),
        (dict(sinks=1, window=3, context_noise_idle=0.3, context_noise_rest=0.7, rest_after=1), 3),
        (dict(sinks=1, window=3, sink_noise=0.3), 1),
    ],
)
def test_compiled_merged_pass_session(geometry, repeats, monkeypatch):
    """The compiled backend with merge (BackendOptions(merge=True)): each chunk's cache pass waits
    for the next chunk's first pass. It draws eager's frames (with context noise too: the same draws in the
    same order), counts the waiting chunk in cache_fill, leaves it behind at a reset (the ring
    would otherwise get a frame of the old game), and `flush` writes it alone, after which the
    ring is eager's. repeats=3 runs each chunk's function three times, as a CUDA graph's two
    warm-up runs and its replay do on a GPU: a call that changed its own inputs would drift."""
    from worldmodel.runtime.backends import compiled as cb

    once = cb.CompiledGenerator._chunk_fn

    def repeated(self, mode="plain"):
        return [once(self, mode) for _ in range(repeats)][-1]

    monkeypatch.setattr(cb.CompiledGenerator, "_chunk_fn", repeated)
    e, c = session(**geometry), session(backend="compiled", options=BackendOptions(merge=True), **geometry)
    assert c.generator.merge and c.generator.merged is not None
    k = c.cfg.chunk
    for seed in (3, 4):  # the second round starts with a chunk waiting from the first
        a, b = [e.reset(seed=seed)], [c.reset(seed=seed)]
        assert c.generator.pending() == 0 and c.cache_fill == e.cache_fill
        for i in range(8 * k):
            act = [{"left", "action"}, {"up"}, set(), set()][i % 4]  # rests of 2 (the idle levels, each)
            a.append(e.step(act))
            b.append(c.step(act))
            assert c.cache_fill == e.cache_fill and c.generator.pending() == k
        diff = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
        assert diff.max() <= 2, diff.max()
    c.generator.flush()
    assert c.generator.pending() == 0 and torch.equal(c.cache.slot_frames, e.cache.slot_frames)
    assert (c.cache.k - e.cache.k).abs().max() <= 1e-4
    assert not session(backend="compiled", **geometry).generator.merge  # off by default


def test_compiled_attention_choice(monkeypatch):
    """auto: the kernel on a GPU only for frames of up to 128 tokens (where it was measured as fast as
    SDPA or faster); the option forces either (a misspelt one is refused: test_compiled_knobs)."""
    pytest.importorskip("triton")
    from kernels import cached_attention
    from worldmodel.runtime.backends import compiled as cb

    monkeypatch.setattr(cached_attention, "available", lambda device: True)
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert cb.use_kernel(gpu, 64) and cb.use_kernel(gpu, 128)
    assert not cb.use_kernel(gpu, 256) and not cb.use_kernel(gpu, 1560)
    assert not cb.use_kernel(cpu, 64)
    assert cb.use_kernel(gpu, 1560, "kernel") and cb.use_kernel(cpu, 64, "kernel")
    assert not cb.use_kernel(gpu, 64, "sdpa")


def test_idle_context_level_writes_chunks_at_rest_at_their_own_level():
    """context_noise_idle: a chunk drawn with no key held goes into the cache at that level, the others
    and the real start frames at context_noise. Two models alike but for the idle level play the same
    frames under keys and part only once a chunk drawn at rest is in the cache; the first frame reads
    only the start frame, written as a model without the idle level writes it. Unset, the field is left
    out of the config (old exports and fingerprints stay valid). The compiled and ONNX backends:
    test_compiled_session_plays_like_eager, test_compiled_merged_pass_session and
    test_onnx_session_with_an_idle_level_plays_like_eager."""
    a, b = session(context_noise_idle=0.3), session(context_noise_idle=0.5)
    plain = session()
    for s in (a, b, plain):
        s.reset(seed=5)
    for _ in range(4):  # under a key: the idle level is never used
        assert np.array_equal(a.step({"up"}), b.step({"up"}))
    for s in (a, b, plain):
        s.reset(seed=6)
    first = [s.step(set()) for s in (a, b, plain)]
    assert np.array_equal(first[0], first[1]) and np.array_equal(first[0], first[2])
    assert not np.array_equal(a.step(set()), b.step(set()))  # the chunk at rest, written at 0.3 or at 0.5
    assert a.cfg.to_dict()["context_noise_idle"] == 0.3 and "context_noise_idle" not in plain.cfg.to_dict()


def test_a_long_rest_is_written_at_the_rest_level():
    """context_noise_rest: once more than rest_after frames in a row have had no key held, a chunk drawn at
    rest goes into the cache at that level; a key ends the rest, and so does a reset. A model alike but for
    the field plays the same frames until a chunk past the gate is in the cache; with rest_after 0 every
    chunk at rest is written at it (a model whose idle level is that level). The compiled and ONNX
    backends and batched rows draw eager's frames across the switch: test_compiled_session_plays_like_eager,
    test_compiled_merged_pass_session, test_onnx_session_plays_like_eager_with_its_levels, test_batch.py."""
    from worldmodel.model.config import ModelConfig
    from worldmodel.model.sampling import rest_level

    rule = dict(context_noise_idle=0.3, context_noise_rest=0.6)
    a, b = session(**rule, rest_after=2), session(context_noise_idle=0.3)
    for s in (a, b):
        s.reset(seed=7)
    for act in [set(), set(), {"up"}, set(), set(), {"left"}]:  # rests of 2: never past the gate
        assert np.array_equal(a.step(act), b.step(act))
    for _ in range(3):  # a rest of 3: its third frame is drawn before its chunk is written at 0.6
        assert np.array_equal(a.step(set()), b.step(set()))
    assert not np.array_equal(a.step(set()), b.step(set()))
    for s in (a, b):  # a reset starts the count again
        s.reset(seed=8)
    for _ in range(3):
        assert np.array_equal(a.step(set()), b.step(set()))
    always, idle = session(**rule, rest_after=0), session(context_noise_idle=0.6)
    for s in (always, idle):
        s.reset(seed=9)
    for act in [set(), {"up"}, set(), set(), set()]:
        assert np.array_equal(always.step(act), idle.step(act))
    # the rule, and the config that carries it (left out when unset: old exports and fingerprints hold)
    cfg = a.cfg
    assert [rest_level(cfg, n) for n in (1, 2, 3)] == [0.3, 0.3, 0.6]
    only = ModelConfig.from_name("tiny", context_noise=0.1, context_noise_rest=0.6, rest_after=2)
    assert [rest_level(only, n) for n in (2, 3)] == [0.1, 0.6]  # no idle level: context_noise until then
    assert rest_level(session().cfg, 5) is None
    d = cfg.to_dict()
    assert (d["context_noise_rest"], d["rest_after"]) == (0.6, 2) and ModelConfig.from_dict(d) == cfg
    plain = session().cfg.to_dict()
    assert "context_noise_rest" not in plain and "rest_after" not in plain
    for bad, match in [
        (dict(context_noise_rest=1.0), "context_noise_rest must be"),
        (dict(rest_after=-1), "rest_after must be between"),
        (dict(rest_after=2.5), "rest_after must be an integer"),
        (dict(rest_after=True), "rest_after must be an integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            ModelConfig.from_name("tiny", **bad)


def test_a_start_cut_from_a_recording_is_written_with_its_keys():
    """reset(frames, actions=...): each frame given is written with the key that produced it, as training
    writes its real context (train/self_forcing.rollout), and the sink again with its own key once it
    leaves the window: the frames are the sampler's run by hand with those keys. Without actions a start
    is a player standing still (none pressed), and the keys reach the world."""
    from worldmodel.model.attention import CachedAttention
    from worldmodel.model.kv_cache import RingKVCache
    from worldmodel.model.sampling import generate_chunk, write_context

    s, plain = session(sink_noise=0.5, context_noise=0.1), session(sink_noise=0.5, context_noise=0.1)
    cfg, m, space = s.cfg, s.model, s.action_space
    start = np.stack([s.start_frames[0], np.roll(s.start_frames[0], 4, axis=1)])
    given = np.stack([space.encode(["left"]), space.encode(["up", "action"])])
    keys = [{"up"}, set(), {"left"}, {"up", "action"}, set(), {"right"}]
    got = [s.reset(start, seed=7, actions=given)] + [s.step(a) for a in keys]
    g = torch.Generator().manual_seed(7)
    shape = (1, 1, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)

    def noise():
        return torch.randn(shape, generator=g)

    cache = RingKVCache(cfg, 1)
    attn = CachedAttention(m.dit.rope, cache, 1)
    act = torch.as_tensor(given)[None]
    with torch.no_grad():
        z = m.ae.encode(m.ae.to_float(torch.as_tensor(start)))[None]
        for f0 in range(2):
            write_context(
                m.dit, z[:, f0 : f0 + 1], act[:, f0 : f0 + 1], cache, f0, noise, cfg.context_noise, attn
            )
        by_hand = []
        for i, a in enumerate(keys):
            f0 = 2 + i
            if f0 == cfg.sinks + cfg.window:  # the sink, with the key that produced it
                write_context(m.dit, z[:, :1], act[:, :1], cache, 0, noise, 0.5, attn)
            key = torch.as_tensor(space.encode(list(a))).expand(1, 1, -1)
            x0 = generate_chunk(m.dit, noise(), key, cache, f0, s.schedule, noise, cfg.context_noise, None,
                                attn)  # fmt: skip
            by_hand.append(m.ae.to_uint8(m.ae.decode(x0[:, 0]).float())[0].numpy())
    diff = np.abs(np.stack(got[1:]).astype(int) - np.stack(by_hand).astype(int))
    assert diff.max() <= 1, diff.max()
    still = [plain.reset(start, seed=7)] + [plain.step(a) for a in keys]
    none = [plain.reset(start, seed=7, actions=np.zeros_like(given))] + [plain.step(a) for a in keys]
    assert all(np.array_equal(p, q) for p, q in zip(still, none, strict=True))
    assert not np.array_equal(still[1], got[1])
    with pytest.raises(ValueError, match="actions"):
        s.reset(start, actions=given[:1])
    with pytest.raises(ValueError, match="actions"):
        s.reset(actions=given[:1])


def test_sinks_written_again_at_sink_noise_once_they_leave_the_window():
    """sink_noise: before the first chunk whose window no longer holds the sinks (frame sinks + window), the
    session writes them into the cache again at that level, once per reset (a reset from more frames than
    that: before its first chunk). Its frames are the sampler's run by hand with that one extra pass (the
    same noise draws in the same order); a model without sink_noise draws the same frames before it and
    others after; at level 0 the pass is the reset's own (a sink attends only to itself), so nothing
    changes. Unset, the field is left out of the config. The other backends and batched rows:
    test_compiled_session_plays_like_eager, test_compiled_merged_pass_session,
    test_onnx_session_plays_like_eager_with_its_levels, test_batch.py."""
    from worldmodel.model.attention import CachedAttention
    from worldmodel.model.kv_cache import RingKVCache
    from worldmodel.model.sampling import generate_chunk, write_context

    sessions = {
        "sink": session(sink_noise=0.5, context_noise=0.1),
        "plain": session(context_noise=0.1),
        "zero": session(sink_noise=0.0),  # the sinks written again clean, as a clean cache first wrote them
        "clean": session(),
    }
    s, plain = sessions["sink"], sessions["plain"]
    cfg, m, space = s.cfg, s.model, s.action_space
    at = cfg.sinks + cfg.window  # 5: window 4, one sink
    keys = [{"up"}, set(), {"left"}, {"up", "action"}, set(), {"right"}, {"down"}, set()]
    shape = (1, 1, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    for seed in (7, 8):  # a second reset writes them again
        got = {name: [x.reset(seed=seed)] for name, x in sessions.items()}
        for a in keys:
            for name, x in sessions.items():
                got[name].append(x.step(a))
        g = torch.Generator().manual_seed(seed)

        def noise(g=g):
            return torch.randn(shape, generator=g)

        cache = RingKVCache(cfg, 1)
        attn = CachedAttention(m.dit.rope, cache, 1)
        noop = torch.as_tensor(space.noop()).expand(1, 1, -1)
        with torch.no_grad():
            z = m.ae.encode(m.ae.to_float(torch.as_tensor(s.start_frames[:1])))[None]
            for f0 in range(START_CONTEXT):  # the start frame, written as the context training saw
                write_context(m.dit, z, noop, cache, f0, noise, cfg.context_noise, attn)
            by_hand = []
            for i, a in enumerate(keys):
                f0 = START_CONTEXT + i
                if f0 == at:
                    write_context(m.dit, z, noop, cache, 0, noise, 0.5, attn)
                act = torch.as_tensor(space.encode(list(a))).expand(1, 1, -1)
                x0 = generate_chunk(m.dit, noise(), act, cache, f0, s.schedule, noise, cfg.context_noise,
                                    None, attn)  # fmt: skip
                by_hand.append(m.ae.to_uint8(m.ae.decode(x0[:, 0]).float())[0].numpy())
        diff = np.abs(np.stack(got["sink"][1:]).astype(int) - np.stack(by_hand).astype(int))
        assert diff.max() <= 1, diff.max()
        assert all(np.array_equal(p, q) for p, q in zip(got["clean"], got["zero"], strict=True))
        # the first frame drawn after the rewrite (frame_index counts the start frame as 0)
        first = at - (START_CONTEXT - 1)
        same = [np.array_equal(p, q) for p, q in zip(got["plain"][:first], got["sink"][:first], strict=True)]
        assert all(same)
        assert not np.array_equal(got["plain"][first], got["sink"][first])
    levels = []  # a reset from 6 frames: the sink has left the window before the first chunk
    write = s.generator.write_context
    s.generator.write_context = lambda *a, **kw: (
        levels.append(a[4] if len(a) > 4 else None) or write(*a, **kw)
    )
    s.reset(np.repeat(s.start_frames[:1], 6, 0), seed=1)
    s.step({"up"})
    s.step({"up"})
    assert levels == [None] * 6 + [0.5]
    assert s.cfg.to_dict()["sink_noise"] == 0.5 and "sink_noise" not in plain.cfg.to_dict()
    with pytest.raises(ValueError, match="sink_noise needs sinks"):
        session(chunk=2, sinks=1, sink_noise=0.3)


onnx_backend = pytest.importorskip("worldmodel.runtime.backends.onnx")
if onnx_backend.available():
    pytest.skip(onnx_backend.available(), allow_module_level=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A micro model (chunks of 2, two sinks, the position table) exported once for the module."""
    s = session(chunk=2, sinks=2, pos_embed=True)
    out = onnx_backend.export(s.model, tmp_path_factory.mktemp("onnx") / "export")
    return s, out


def test_export_writes_the_three_graphs(exported):
    s, out = exported
    meta = json.loads((out / "onnx.json").read_text())
    assert {p.name for p in out.iterdir()} == {"denoise.onnx", "cache.onnx", "decode.onnx", "onnx.json"}
    assert meta["config"] == s.cfg.to_dict() and meta["fingerprint"] == onnx_backend.fingerprint(s.model)


def test_onnx_passes_match_eager_within_1e4(exported):
    """Each exported graph, run by ONNX Runtime, against the PyTorch module it came from."""
    s, out = exported
    gen = onnx_backend.OnnxGenerator(out, s.model, torch.device("cpu"))
    s.reset(seed=0)
    for _ in range(9):  # past a full ring
        s.step({"up"})
    cfg, c = s.cfg, s.cache
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, cfg.chunk, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, generator=g)
    a = torch.rand(1, cfg.chunk, s.action_space.size, generator=g)
    f0 = next_chunk(s)
    ref = s.model.dit.forward_cached(x, 0.4, a, c, f0, attn=KernelAttention(s.model.dit.rope, c))
    got = gen.forward_cached(x, 0.4, a, c, f0)
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))

    z = torch.randn(1, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, generator=g)
    frame = gen.decode(z)
    expect = s.model.ae.to_uint8(s.model.ae.decode(z))[0].numpy()
    assert frame.dtype == np.uint8 and frame.shape == expect.shape
    assert np.abs(frame.astype(int) - expect.astype(int)).max() <= 1

    before = c.k.clone()
    gen.forward_cached(x, 0.0, a, c, f0, write=True)  # the cache pass writes the ring and tags it
    assert not torch.equal(before, c.k) and int(c.slot_frames.max()) == f0 + cfg.chunk - 1


def test_onnx_session_plays_like_eager(exported):
    s, out = exported
    o = session(backend="onnx", chunk=2, sinks=2, pos_embed=True, onnx_dir=out)
    assert o.backend == "onnx"
    a, b = [s.reset(seed=5)], [o.reset(seed=5)]
    rng = np.random.default_rng(0)
    for _ in range(12):
        act = rng.integers(0, 2, s.action_space.size).astype(np.float32)
        a.append(s.step(act))
        b.append(o.step(act))
    diff = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
    assert diff.max() <= 2, diff.max()  # same frames up to rounding, with no drift over 12 frames


def test_bad_exports_are_refused(exported, tmp_path):
    s, out = exported
    with pytest.raises(ValueError, match="not a worldmodel ONNX export"):
        onnx_backend.OnnxGenerator(tmp_path, s.model, torch.device("cpu"))
    other = session()  # chunk 1, no extra sinks: another config
    with pytest.raises(ValueError, match="another config"):
        onnx_backend.OnnxGenerator(out, other.model, torch.device("cpu"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in out.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "cache.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cache.onnx"):
        onnx_backend.OnnxGenerator(broken, s.model, torch.device("cpu"))


def test_pair_rotation_turns_interleaved_pairs_exactly():
    """PairRotation (a matmul by a signed permutation + two products) equals turning each pair
    (2j, 2j + 1) by its angle, and leaves the channels past the turned pairs untouched, bit for bit."""
    from worldmodel.runtime.backends.static_step import PairRotation

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 12, generator=g)
    angle = torch.rand(5, 4, generator=g) * 6  # four of six pairs turn
    rot = PairRotation(12)
    got = rot(x, *rot.tables(angle.cos(), angle.sin()))
    xe, xo = x[:, 0:8:2], x[:, 1:8:2]
    want = x.clone()
    want[:, 0:8:2] = xe * angle.cos() - xo * angle.sin()
    want[:, 1:8:2] = xe * angle.sin() + xo * angle.cos()
    assert torch.allclose(got, want, atol=1e-6) and torch.equal(got[:, 8:], x[:, 8:])
    assert torch.equal(x @ rot.swap @ rot.swap, -x)  # swapping twice negates: a rotation by pi
    # the compiled backend's form (slicing, no matmul) gives the same bits
    pointwise = PairRotation(12, pointwise=True)
    assert torch.equal(pointwise(x, *rot.tables(angle.cos(), angle.sin())), got)


def test_profile_says_where_onnx_ran(exported, tmp_path):
    """A profile of the onnx backend records ONNX Runtime's providers and names them in its table:
    on a GPU machine without onnxruntime-gpu the graphs run on the CPU provider."""
    from worldmodel.profiling.latency import _write, profile_backend

    s, out = exported
    r = profile_backend(
        lambda: session(backend="onnx", chunk=2, sinks=2, pos_embed=True, onnx_dir=out), frames=3, fill=2
    )
    assert r["backend"] == "onnx" and r["providers"] == ["CPUExecutionProvider"]
    _write({"preset": "micro", "command": "pytest", "backends": {"onnx": r}, "failed": {}}, tmp_path)
    assert "| onnx (CPU) |" in (tmp_path / "profile.md").read_text()
    assert json.loads((tmp_path / "profile.json").read_text())["backends"]["onnx"]["providers"]


@pytest.mark.parametrize(
    "levels",
    [
        dict(context_noise=0.1, context_noise_idle=0.4),
        dict(context_noise=0.1, sink_noise=0.4),
        dict(context_noise=0.1, context_noise_idle=0.4, context_noise_rest=0.8, rest_after=1),
    ],
)
def test_onnx_session_plays_like_eager_with_its_levels(tmp_path, levels):
    """context_noise_idle, context_noise_rest and sink_noise through ONNX Runtime: the exported cache pass
    takes its level as an input, so the chunks at rest (after a long rest at the higher level), and the
    sinks written again once they leave the window, are written at theirs, as eager writes them."""
    s = session(**levels)
    out = onnx_backend.export(s.model, tmp_path / "export")
    o = session(backend="onnx", onnx_dir=out, **levels)
    a, b = [s.reset(seed=3)], [o.reset(seed=3)]
    for act in [set(), set(), {"up"}, {"up"}, set(), {"left"}, set(), set()]:
        a.append(s.step(act))
        b.append(o.step(act))
    diff = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
    assert diff.max() <= 2, diff.max()


def test_play_levels_are_set_in_a_checkpoint_and_for_an_eval(tmp_path, monkeypatch):
    """tools/set_play_levels.py rewrites a checkpoint's levels (weights, start frames and metadata kept, the
    change noted in play_levels; 'none' unsets; a level out of range is refused naming the file, the file
    left as it was), and a session of it plays by them; tools/rest_level_eval.py hands eval's loader the
    rule without writing anything ('off' switches it off)."""
    from worldmodel.model import checkpoint

    s = session(context_noise_idle=0.3)
    path = checkpoint.save_checkpoint(tmp_path / "w.safetensors", s.model, torch.as_tensor(s.start_frames),
                                      extra={"trained": "a test"})  # fmt: skip
    before = path.read_bytes()
    levels = load_tool("set_play_levels")
    with pytest.raises(SystemExit, match="w.safetensors: model config context_noise_rest must be"):
        levels.main([str(path), "--context-noise-rest", "1.5"])
    assert path.read_bytes() == before
    assert levels.main([str(path), "--context-noise-rest", "0.6", "--rest-after", "2", "--why", "held"]) == 0
    model, start, extras = checkpoint.load_checkpoint(path)
    assert (model.cfg.context_noise_rest, model.cfg.rest_after, model.cfg.context_noise_idle) == (0.6, 2, 0.3)
    assert torch.equal(start, torch.as_tensor(s.start_frames)) and extras["trained"] == "a test"
    assert extras["play_levels"] == [{"context_noise_rest": 0.6, "rest_after": 2, "why": "held"}]
    weights = zip(model.state_dict().values(), s.model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    ruled = WorldSession.from_checkpoint(path, device="cpu")
    twin = session(context_noise_idle=0.3, context_noise_rest=0.6, rest_after=2)
    for w in (ruled, twin):
        w.reset(seed=3)
    assert all(np.array_equal(ruled.step(set()), twin.step(set())) for _ in range(5))
    assert levels.main([str(path), "--context-noise-idle", "none"]) == 0
    assert checkpoint.load_checkpoint(path)[0].cfg.context_noise_idle is None
    # the eval wrapper: the rule on the loaded model, not in the file
    seen = []
    monkeypatch.setattr("app.cli.main", lambda argv: seen.append(checkpoint.load_checkpoint(argv[-1])[0].cfg))
    rest = load_tool("rest_level_eval")
    rest.main(["5", "0.7", "eval", "--checkpoint", str(path)])
    rest.main(["5", "off", "eval", "--checkpoint", str(path)])
    assert (seen[0].context_noise_rest, seen[0].rest_after) == (0.7, 5) and seen[1].context_noise_rest is None
    assert checkpoint.load_checkpoint(path)[0].cfg.context_noise_rest == 0.6


def test_ship_world_names_the_play_levels_it_ships_and_those_it_replaces(tmp_path):
    """tools/ship_world.py ships the student's own config; its line says which levels the student writes its
    cache at and, where the world it replaces wrote others (a rule set on it alone), which."""
    from worldmodel.model import checkpoint

    ship = load_tool("ship_world")
    plain = session(context_noise_idle=0.3).cfg
    ruled = session(context_noise_idle=0.3, context_noise_rest=0.5, rest_after=48)
    old = checkpoint.save_checkpoint(tmp_path / "model.safetensors", ruled.model)
    line = ship.levels_line(plain, old)
    assert "context_noise_idle 0.3" in line and "context_noise_rest None" in line
    assert "the world replaced had context_noise_rest 0.5, rest_after 48" in line
    assert "replaced" not in ship.levels_line(ruled.cfg, old)
    assert "replaced" not in ship.levels_line(plain, tmp_path / "none.safetensors")


def test_play_guidance_eval_guides_only_the_passes_of_chunks_with_a_key(monkeypatch):
    """tools/play_guidance_eval.py: a denoising pass of a row with a key held becomes u + s (c - u) (u: the
    pass without actions), a row with no key and every cache pass stay as they were; eval runs with it and
    the network is given back after."""
    from worldmodel.model.dit import CausalDiT

    tool = load_tool("play_guidance_eval")
    # a stand-in network: c = 2x with actions, u = x without them
    fake = lambda self, x, t, actions, cache, f0, write=False, attn=None, action_drop=None: (  # noqa: E731
        x if action_drop is not None else 2 * x
    )
    x = torch.ones(3, 1, 2, 2, 2)
    actions = torch.zeros(3, 1, 5)
    actions[1, 0, 0] = 1.0  # row 1 holds a key
    out = tool.guided(fake, 3.0)(None, x, 0.5, actions, None, 0)
    assert out[0].eq(2).all() and out[2].eq(2).all() and out[1].eq(1 + 3 * 1).all()
    assert tool.guided(fake, 3.0)(None, x, 0.5, actions, None, 0, write=True).eq(2).all()
    # a session: the same frames until a key is held, others after
    plain = CausalDiT.forward_cached
    a = session()
    a.reset(seed=3)
    ref = [a.step(set()) for _ in range(3)] + [a.step({"up"}) for _ in range(3)]
    monkeypatch.setattr(CausalDiT, "forward_cached", tool.guided(plain, 2.0))
    b = session()
    b.reset(seed=3)
    got = [b.step(set()) for _ in range(3)] + [b.step({"up"}) for _ in range(3)]
    assert all(np.array_equal(r, g) for r, g in zip(ref[:3], got[:3], strict=True))
    assert not np.array_equal(ref[-1], got[-1])
    monkeypatch.setattr(CausalDiT, "forward_cached", plain)
    seen = []
    monkeypatch.setattr("app.cli.main", lambda argv: seen.append((argv, CausalDiT.forward_cached is plain)))
    tool.main(["1.5", "eval", "--checkpoint", "x"])
    assert seen == [(["eval", "--checkpoint", "x"], False)] and CausalDiT.forward_cached is plain


def test_play_sampler_eval_draws_a_long_rest_from_the_frame_before_and_other_levels(monkeypatch):
    """tools/play_sampler_eval.py: with --rest-start T, a chunk past the rest rule's gate starts from the
    chunk before's latents noised to T and takes only the levels at or below T (frames before the gate and
    under keys as they were); with --levels, every chunk is denoised through the levels given; eval runs
    with it and the eager backend is given back after."""
    from worldmodel.model.dit import CausalDiT
    from worldmodel.runtime.backends.eager import EagerGenerator

    tool = load_tool("play_sampler_eval")
    rule = dict(context_noise_idle=0.3, context_noise_rest=0.5, rest_after=2)
    keys = [{"up"}, set(), set(), set(), set(), set(), {"up"}, set()]
    passes = []
    plain_pass = CausalDiT.forward_cached

    def counted(self, *args, **kwargs):
        if passes and not kwargs.get("write"):  # a denoising pass of a step (not reset's or a cache pass)
            passes[-1] += 1
        return plain_pass(self, *args, **kwargs)

    monkeypatch.setattr(CausalDiT, "forward_cached", counted)

    def run(**kw):
        passes.clear()
        with tool.patched(**kw) as counts:
            s = session(**rule)
            s.reset(seed=3)
            frames = []
            for k in keys:
                passes.append(0)
                frames.append(s.step(k))
        return frames, dict(counts), list(passes), s.schedule.tolist()

    ref, _, ref_passes, levels = run()
    got, counts, got_passes, _ = run(rest_start=levels[1])
    assert counts == {"from the frame before": 3, "from noise": 5}  # rest frames 3-5 are past the gate of 2
    assert all(np.array_equal(a, b) for a, b in zip(ref[:3], got[:3], strict=True))
    assert not np.array_equal(ref[3], got[3])
    steps = len(levels)
    assert ref_passes == [steps] * 8 and got_passes == [steps] * 3 + [steps - 1] * 3 + [steps] * 2
    other, _, other_passes, other_levels = run(levels=[1.0, 0.5])
    assert other_levels == [1.0, 0.5] and other_passes == [2] * 8 and not np.array_equal(ref[0], other[0])
    with pytest.raises(SystemExit, match="--rest-start 0.01: below every level"):
        run(rest_start=0.01)

    generate = EagerGenerator.generate
    seen = []
    monkeypatch.setattr("app.cli.main", lambda argv: seen.append((argv, EagerGenerator.generate is generate)))
    assert tool.main(["--rest-start", "0.75", "eval", "--checkpoint", "x"]) is None
    assert seen == [(["eval", "--checkpoint", "x"], False)] and EagerGenerator.generate is generate
