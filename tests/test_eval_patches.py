"""The ruler's patch test (worldmodel/eval/patches.py): a frame holding something the real game never
draws at that place is out of distribution, even when its pooled features sit among real frames'."""

import numpy as np
import pytest
import torch

from worldmodel.eval import patches as pa
from worldmodel.eval import probe as pr
from worldmodel.eval import ruler as ru


def _halves(n: int, seed: int = 0) -> np.ndarray:
    """16x16 frames: left half some red, right half some blue (shades vary per frame)."""
    rng = np.random.default_rng(seed)
    f = np.zeros((n, 16, 16, 3), np.uint8)
    f[:, :, :8, 0] = rng.integers(150, 256, (n, 1, 1))
    f[:, :, 8:, 2] = rng.integers(150, 256, (n, 1, 1))
    return f


def test_each_place_has_its_own_bank_and_one_odd_patch_alone_is_not_foreign():
    ref = _halves(40)
    bank = pa.build_bank(ref, size=4, cap=1000)
    assert bank.dtype == torch.uint8 and bank.shape[0] == 16 and bank.shape[2] == 48
    # every reference frame is in the bank, patch for patch
    assert np.allclose(pa.distances(ref, bank, 4), 0, atol=0.01)  # float rounding of the expansion
    new = _halves(10, seed=1)
    assert pa.scores(new, bank, 4).max() < 0.2  # other shades of the same things at the same places
    swapped = new[:, :, ::-1].copy()  # blue on the left, red on the right: each colour is real, not there
    assert pa.scores(swapped, bank, 4).min() > 3
    one = new.copy()
    one[:, :4, :4] = 255  # one white patch
    two = one.copy()
    two[:, 12:, 12:] = 255  # and a second
    assert pa.scores(one, bank, 4).max() < 0.2 and pa.scores(one, bank, 4, rank=1).min() > 1
    assert pa.scores(two, bank, 4).min() > 1
    with pytest.raises(ValueError, match="frames of 8x8 give 4 patches"):
        pa.distances(new[:, :8, :8], bank, 4)


def test_a_full_bank_keeps_the_rare_patch_by_k_center():
    frames = np.zeros((50, 4, 4, 3), np.uint8)
    frames[:, :, :, 1] = np.arange(50)[:, None, None] % 3  # three near-identical greens
    frames[7] = [250, 0, 250]  # one magenta frame
    bank = pa.build_bank(frames, size=4, cap=2)
    assert bank.shape == (1, 2, 48)
    kept = {tuple(int(v) for v in row.view(3, 4, 4)[:, 0, 0]) for row in bank[0]}  # (channel, y, x)
    assert (250, 0, 250) in kept  # the farthest from the commonest is kept, not a second green
    assert pa.bank_size(1024, 1024, 4, 256) < 256  # a large frame keeps fewer per place


def test_k_center_matches_a_plain_greedy_in_whole_numbers():
    def plain(rows, first, m):  # the definition, in int64: no rounding anywhere
        r = rows.astype(np.int64)
        dist, chosen = ((r - r[first]) ** 2).sum(1), [first]
        for _ in range(m - 1):
            chosen.append(int(dist.argmax()))
            dist = np.minimum(dist, ((r - r[chosen[-1]]) ** 2).sum(1))
        return chosen

    rng = np.random.default_rng(0)
    for d in (48, 192):  # float32 for 4x4 patches, float64 past 6x6
        rows = np.unique(rng.integers(0, 256, (600, d), dtype=np.uint8), axis=0)
        rows[300:] = rows[300:] // 64 * 64  # coarse values: many equal distances, the first of equals wins
        rows = np.unique(rows, axis=0)
        assert pa._k_center(rows, 5, 64) == plain(rows, 5, 64)


def _crops(world: np.ndarray, spots, size: int = 16) -> np.ndarray:
    return np.stack([world[y : y + size, x : x + size] for y, x in spots])


def _walk(world: np.ndarray, moves, n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """(n, 2, size, size, 3) consecutive views of `world` under a camera making one of `moves` (dy, dx) a
    frame, kept inside the world."""
    rng = np.random.default_rng(seed)
    y = x = (len(world) - size) // 2
    pairs = []
    for _ in range(n):
        dy, dx = moves[rng.integers(len(moves))]
        ny = int(np.clip(y + dy, 0, len(world) - size))
        nx = int(np.clip(x + dx, 0, len(world) - size))
        pairs.append(_crops(world, [(y, x), (ny, nx)], size))
        y, x = ny, nx
    return np.stack(pairs)


def test_scroll_step_reads_how_far_the_view_moves_between_frames():
    world = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    still = [(0, 0)]

    def step(by, share_still=0):
        moves = [(by, 0), (-by, 0), (0, by), (0, -by)] + still * share_still
        return pa.scroll_step(_walk(world, moves, 200))

    assert step(2) == 2 and step(1) == 1 and step(3, share_still=4) == 3
    assert step(8) == 0  # a view that jumps further than a patch: its patches stay on the grid
    mixed = [(2, 0), (-2, 0), (0, 2), (0, -2), (0, 4)]  # now and then a step of 4 (a run, say)
    assert pa.scroll_step(_walk(world, mixed, 200)) == 2  # the commonest move, not the largest
    assert pa.scroll_step(_walk(world, still, 50)) == 0
    rare = _walk(world, still, 100)
    rare[:2] = _walk(world, [(2, 0)], 2)  # 2 % of the pairs move: not a scrolling game
    assert pa.scroll_step(rare) == 0
    assert pa.scroll_step(_walk(world, [(2, 0)], 10, size=16)) == 0  # too small a frame to tell


def test_a_bank_that_follows_the_scroll_knows_the_steps_between_the_grids_places():
    world = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ref = _crops(world, [(y, x) for y in range(0, 25, 4) for x in range(0, 25, 4)])  # the grid's phase
    between = _crops(world, [(y, x) for y in range(2, 23, 4) for x in range(2, 23, 4)])  # 2 px off it
    odd = _crops(world, [(y, x) for y in range(1, 22, 4) for x in range(1, 22, 4)])  # 1 px off it
    fixed, follows = pa.build_bank(ref, 4, 10_000), pa.build_bank(ref, 4, 10_000, step=2)
    assert pa.distances(ref, follows, 4).max() < 0.01  # it still holds every place's own patches
    assert pa.distances(between, fixed, 4).min() > 0.3
    assert pa.distances(between, follows, 4).max() < 0.01
    assert pa.distances(odd, follows, 4).min() > 0.3  # a scroll of 2 px never draws these


def test_the_ruler_flags_a_sprite_its_features_miss_and_round_trips_its_bank(tmp_path, capsys):
    from worldmodel.data import format as fmt
    from worldmodel.data.recorder import record

    data = tmp_path / "D"
    record(data, "overworld", "explore", episodes=6, steps=120, seed=3, workers=1, show_progress=False)
    ruler = ru.build_ruler(data, None, 30, 16, 300, (20,), say=lambda _: None)
    assert ruler.patch_bank.shape[:1] == (256,) and ruler.patch_threshold > 0
    assert ruler.patch_step == 2  # the Overworld at 64x64 scrolls 2 px a frame
    m = fmt.Manifest.load(data)
    cal_ids = {e["id"] for e in ruler.info["episodes"]["calibration"]}
    cal = np.concatenate(
        [np.asarray(fmt.open_episode(data, m, e).frames) for e in m.episodes if e["id"] in cal_ids]
    )
    assert ruler.foreign(cal).mean() <= 0.05  # about 1 % of real frames, by construction
    sprite = cal.copy()  # a magenta-and-cyan thing beside the player: no Overworld colour
    checker = (np.indices((8, 8)).sum(0) % 2)[..., None]
    sprite[:, 24:32, 36:44] = np.where(checker, [255, 0, 255], [0, 255, 255])
    by_features = ruler.nearest(ruler.features(sprite)) > ruler.nn_threshold
    assert by_features.mean() < 0.5  # the pooled features barely see it ...
    assert ruler.foreign(sprite).mean() > 0.95  # ... the patches do

    path = ruler.save(tmp_path / "r.safetensors")
    again = ru.load_ruler(path)
    assert torch.equal(again.patch_bank, ruler.patch_bank) and again.patch_threshold == ruler.patch_threshold
    np.testing.assert_array_equal(again.foreign(sprite), ruler.foreign(sprite))
    assert again.summary()["patch_threshold"] == ruler.patch_threshold
    assert again.patch_step == 2 and again.summary()["patch_step"] == 2

    # a ruler written before the bank: the features' test alone, and it can be given a bank later
    old = ru.Ruler(
        ruler.probe, ruler.mean, ruler.std, ruler.reference, ruler.nn_threshold, {}, 1.0, ruler.info
    )
    old_path = old.save(tmp_path / "old.safetensors")
    old = ru.load_ruler(old_path)
    assert old.patch_bank is None and old.summary()["patch_threshold"] is None
    np.testing.assert_array_equal(old.foreign(sprite), by_features)
    ru.add_patches_from(old, data)
    assert old.foreign(sprite).mean() > 0.95 and old.patch_threshold > 0
    other = tmp_path / "E"
    record(other, "overworld", "explore", episodes=6, steps=120, seed=4, workers=1, show_progress=False)
    with pytest.raises(ValueError, match="episode 000000 of ruler .* holds other frames"):
        ru.add_patches_from(ru.load_ruler(old_path), other)
    # the command: the old ruler's probe and figures, a bank from its own data
    from app.cli import main as wm_main

    new = tmp_path / "new.safetensors"
    assert (
        wm_main(["eval-ruler", "--data", str(data), "--out", str(new), "--add-patches", str(old_path)]) == 0
    )
    got = ru.load_ruler(new)
    assert got.nn_threshold == ruler.nn_threshold and got.patch_threshold == old.patch_threshold
    assert ru.load_ruler(old_path).patch_bank is None  # the old file is left as it was
    assert wm_main(["eval-ruler", "--data", str(data), "--out", str(new), "--add-patches", "nope.st"]) == 2
    assert "--add-patches nope.st: no such file" in capsys.readouterr().err


def test_a_damaged_bank_is_refused_naming_the_file(tmp_path):
    import json

    from safetensors import safe_open

    from worldmodel.model.checkpoint import write_safetensors

    rng = np.random.default_rng(0)
    probe = pr.InverseDynamicsProbe(pr.ProbeConfig(16, 16, ("up",)))
    d = 2 * probe.cfg.channels[-1]
    ruler = ru.Ruler(
        probe,
        np.zeros(d),
        np.ones(d),
        rng.normal(size=(4, d)).astype(np.float32),
        1.0,
        {},
        1.0,
        {"game": "g", "resolution": [16, 16], "keys": ["up"]},
    )
    ru.add_patches(ruler, _halves(20), _halves(20, seed=2))
    good = ruler.save(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    tensors["patch_bank"] = tensors["patch_bank"][:, :, :10].contiguous()
    extras = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "version", "config", "sha256")}
    write_safetensors(
        tmp_path / "bad.safetensors",
        tensors,
        ru.RULER_FORMAT,
        ru.RULER_VERSION,
        json.loads(meta["config"]),
        extras,
    )
    with pytest.raises(ValueError, match=r"bad.safetensors: patch_bank of torch.uint8 \(16, \d+, 10\)"):
        ru.load_ruler(tmp_path / "bad.safetensors")


def test_a_ladders_old_ruler_gets_a_bank_when_its_episodes_allow_and_runs_on_without_one(tmp_path):
    from types import SimpleNamespace

    from worldmodel.data.recorder import record
    from worldmodel.eval import ladder

    game = SimpleNamespace(
        game="no-shipped-ruler", resolution=(64, 64), action_space=SimpleNamespace(keys=("x",))
    )
    for episodes, banked in ((3, False), (6, True)):  # 2 and 4 reference episodes
        data = tmp_path / f"D{episodes}"
        record(
            data, "overworld", "explore", episodes=episodes, steps=60, seed=3, workers=1, show_progress=False
        )
        r = ru.build_ruler(data, None, 5, 8, 100, (20,), say=lambda _: None)
        out = tmp_path / f"out{episodes}"
        out.mkdir()
        ru.Ruler(r.probe, r.mean, r.std, r.reference, r.nn_threshold, {}, 1.0, r.info).save(
            out / "ruler.safetensors"
        )
        got, how = ladder._ladder_ruler(None, game, data, [], out, "cpu", lambda _: None)
        assert how == "trained for this run" and (got.patch_bank is not None) == banked
        assert (
            ru.load_ruler(out / "ruler.safetensors").patch_bank is not None
        ) == banked  # saved for next time
    # a bank from before the scroll step is made again, following the game's scroll
    r.patch_step = None
    r.patch_bank = r.patch_bank[:, :8].contiguous()
    r.save(out / "ruler.safetensors")
    assert ru.load_ruler(out / "ruler.safetensors").patch_step is None
    got, _ = ladder._ladder_ruler(None, game, data, [], out, "cpu", lambda _: None)
    assert got.patch_step == 2 and got.patch_bank.shape[1] > 8
    assert ru.load_ruler(out / "ruler.safetensors").patch_step == 2
