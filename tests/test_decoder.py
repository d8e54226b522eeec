"""The decoder stage (train/decoder.py): the pairs it collects, what it trains, the command."""

import numpy as np
import pytest
import torch

from worldmodel.data import format as fmt
from worldmodel.model.checkpoint import WorldModel, load_checkpoint, save_checkpoint
from worldmodel.train.decoder import DEFAULTS, DecoderStage, PatchDiscriminator, clip_starts, collect_pairs

NARROW = {"dim": 48, "depth": 2, "heads": 2}


@pytest.fixture(scope="module")
def world(recorded, tmp_path_factory):
    """A random world of the recorded dataset's frames and keys, saved as a checkpoint."""
    from worldmodel.train.pipeline import make_config

    torch.manual_seed(0)
    model = WorldModel(make_config(recorded, "tiny", NARROW))
    model.dit.reset_parameters(zero_init=False)
    path = tmp_path_factory.mktemp("world") / "model.safetensors"
    save_checkpoint(path, model, extra={"stages": ["ae"]})
    return path


def test_clip_starts_leave_room_for_the_two_start_frames_and_the_horizon():
    starts = clip_starts([5, 40, 12], 400, 8, seed=3)
    assert {e for e, _ in starts} == {1, 2}  # 5 frames hold no start for 8 after 2
    for e, o in starts:
        assert o >= 1 and o + 8 < [5, 40, 12][e]
    assert clip_starts([5, 40, 12], 400, 8, seed=3) == starts
    with pytest.raises(ValueError, match="no episode holds 10 frames"):
        clip_starts([5, 9], 4, 8, seed=0)


def test_collected_latents_are_the_worlds_own_with_the_games_frames(recorded, world):
    """Each latent decodes to the frame a lone WorldSession draws from the same two real frames, seed
    and keys (to a level, as tests/test_batch.py's rows do); beside it, the frame the game showed there."""
    from worldmodel import WorldSession
    from worldmodel.train.decoder import clip_starts

    model, _, _ = load_checkpoint(world)
    manifest = fmt.Manifest.load(recorded)
    entries = manifest.episodes[:2]
    clips, horizon, seed = 5, 3, 7
    pairs = collect_pairs(model, recorded, entries, clips, horizon, seed, "cpu", rows=2, say=None)
    assert pairs["latents"].shape[0] == pairs["frames"].shape[0] == clips * horizon
    assert list(pairs["horizon"][:horizon]) == [1, 2, 3]

    session = WorldSession.from_checkpoint(world, device="cpu", backend="eager")
    ae = session.model.ae
    episodes = [fmt.open_episode(recorded, manifest, e) for e in entries]
    for i, (e, o) in enumerate(clip_starts([len(ep) for ep in episodes], clips, horizon, seed)):
        ep = episodes[e]
        session.reset(np.array(ep.frames[o - 1 : o + 1]), seed=seed * 1_000_003 + i,
                      actions=fmt.caused_keys(ep, o - 1, o + 1))  # fmt: skip
        drawn = np.stack([session.step(ep.actions[o + t]) for t in range(horizon)])
        rows = slice(i * horizon, (i + 1) * horizon)
        with torch.no_grad():
            decoded = ae.to_uint8(ae.decode(torch.from_numpy(pairs["latents"][rows]))).numpy()
        gap = np.abs(decoded.astype(np.int16) - drawn)  # rows share a pass: float sums in another order
        assert gap.max() <= 1 and (gap > 0).mean() < 1e-2, (gap.max(), (gap > 0).mean())
        np.testing.assert_array_equal(pairs["frames"][rows], ep.frames[o + 1 : o + 1 + horizon])


def test_the_generators_term_leaves_the_discriminator_alone_and_the_encoder_is_frozen(world):
    model, _, _ = load_checkpoint(world)
    ae = model.ae
    frames = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        real = ae.encode(ae.to_float(torch.from_numpy(frames)))
    pairs = {"latents": (real + 0.3 * torch.randn_like(real)).numpy(), "frames": frames,
             "horizon": np.ones(16, np.int16)}  # fmt: skip
    stage = DecoderStage(ae, pairs, torch.device("cpu"), adversarial=0.1)
    assert set(stage.nets) == {"generator", "critic"}
    assert not any(p.requires_grad for p in ae.encoder.parameters())
    losses, logs = stage.loss(stage.sample(8, 0), 0)
    losses["generator"].backward()
    assert all(p.grad is None for p in stage.disc.parameters())  # the decoder's adversarial term only
    assert all(p.grad is not None for p in ae.decoder.parameters())
    losses["critic"].backward()
    assert all(p.grad is not None for p in stage.disc.parameters())
    assert {"l1", "psnr", "adversarial"} <= set(logs)
    batch = stage.sample(8, 1)  # MSE beside L1 (a library option): the decoder's loss grows by it, exactly
    plain = DecoderStage(ae, pairs, torch.device("cpu"), adversarial=0).loss(batch, 0)[0]["generator"]
    with_mse = DecoderStage(ae, pairs, torch.device("cpu"), adversarial=0, mse=2.0).loss(batch, 0)[0][
        "generator"
    ]
    y = ae.decode(torch.cat([batch["real_latent"][:2], batch["latent"][2:]]))
    mse = torch.nn.functional.mse_loss(y, ae.to_float(batch["frames"]))
    torch.testing.assert_close(with_mse - plain, 2.0 * mse)
    assert set(DecoderStage(ae, pairs, torch.device("cpu"), adversarial=0).nets) == {"generator"}
    with pytest.raises(ValueError, match="--decoder-adversarial"):
        DecoderStage(ae, pairs, torch.device("cpu"), adversarial=-1)
    assert PatchDiscriminator()(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 15, 15)


def test_decoder_command_tunes_the_decoder_alone_and_measures_it_held_out(recorded, world, tmp_path, capsys):
    from worldmodel.train.cli import main

    run = tmp_path / "run"
    common = ["--run", str(run), "--data", str(recorded), "--decoder-from", str(world), "--device", "cpu"]
    args = [*common, "--steps", "6", "--decoder-clips", "4", "--decoder-horizon", "2", "--quiet"]
    assert main(["decoder", *args]) == 0
    out = capsys.readouterr().out
    assert "held-out episode(s), before -> after: PSNR@1" in out
    source, _, _ = load_checkpoint(world)
    tuned, _, extras = load_checkpoint(run / "decoder")
    for name, t in tuned.state_dict().items():
        same = torch.equal(t, source.state_dict()[name])
        assert same != name.startswith("ae.decoder."), name  # the decoder moved, nothing else
    info = extras["decoder"]
    assert (info["clips"], info["horizon"], info["adversarial"]) == (4, 2, DEFAULTS["adversarial"])
    assert set(info["held_out"]["after"]) == {"psnr_first", "psnr", "sharpness_first", "sharpness"}
    held = extras["training_data"]["episodes"]  # what it tuned on is recorded (eval refuses it as held out)
    assert [e["id"] for e in held] == [e["id"] for e in fmt.Manifest.load(recorded).episodes[:-1]]

    # --resume reads the pairs again rather than rolling out anew, when the recipe is the same
    assert main(["decoder", *args, "--resume", "--steps", "8", "--stage-minutes", "decoder=5"]) == 0
    assert "8 pairs read from" in capsys.readouterr().out

    # a run whose weights trained elsewhere (a lease's): its recording is not here, and another is split anew
    lent = tmp_path / "lent"
    lent.mkdir()
    (lent / "data.json").write_text('{"data": "/gone/D", "heldout": ["000000"]}')
    with pytest.raises(ValueError, match="/gone/D: no dataset there"):
        main(["decoder", "--run", str(lent), "--decoder-from", str(world), "--steps", "1"])
    assert main(["decoder", "--run", str(lent), *args[2:], "--steps", "1"]) == 0
    ids = [e["id"] for e in fmt.Manifest.load(recorded).episodes]
    tuned_on = load_checkpoint(lent / "decoder")[2]["training_data"]["episodes"]
    assert [e["id"] for e in tuned_on] == ids[:-1]  # the recording's own split, not the lent run's
    assert "held-out episode(s), before -> after" in capsys.readouterr().out

    with pytest.raises(ValueError, match="no such file, and no shipped model"):
        main(
            ["decoder", "--run", str(tmp_path / "new"), "--data", str(recorded), "--decoder-from", "missing"]
        )
    assert not (tmp_path / "new").exists()  # nothing written for a world that is not there
