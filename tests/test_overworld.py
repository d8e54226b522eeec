import gymnasium as gym
import numpy as np
import pytest

from worldmodel.games import make_game
from worldmodel.games import overworld_art as art
from worldmodel.games.overworld import ACTIONS, OverworldEnv

NOOP = ACTIONS.noop()


def act(*keys):
    return ACTIONS.encode(keys)


def random_actions(n, seed):
    rng = np.random.default_rng(seed)
    out, cur = [], NOOP
    for _ in range(n):
        if rng.random() < 0.1:
            cur = (rng.random(ACTIONS.size) < 0.3).astype(np.float32)
        out.append(cur)
    return out


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        frames.append(env.step(a)[0])
    return np.stack(frames)


def test_same_seed_same_actions_same_frames():
    actions = random_actions(300, seed=1)
    a = rollout(OverworldEnv(), 7, actions)
    env = OverworldEnv()
    rollout(env, 8, actions[:50])  # another world in between must leave no trace
    b = rollout(env, 7, actions)
    assert np.array_equal(a, b)
    c = rollout(OverworldEnv(), 9, actions)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("size", [32, 64, 100, 256])
def test_any_size(size):
    env = OverworldEnv(size=size)
    obs, info = env.reset(seed=0)
    assert obs.shape == (size, size, 3) and obs.dtype == np.uint8
    obs2 = env.step(act("right"))[0]
    assert obs2.shape == obs.shape


def test_size_limits():
    with pytest.raises(ValueError, match="between"):
        OverworldEnv(size=512)


def test_gymnasium_registration_and_checker():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("worldmodel.games:worldmodel/Overworld-v0", size=64)
    assert env.observation_space.shape == (64, 64, 3)
    check_env(env.unwrapped, skip_render_check=True)


def test_camera_scrolls_with_the_player():
    env = OverworldEnv()
    x0, y0 = _find(env, 0, lambda e, tx, ty: all(not art.SOLID[e.terrain_at(tx + k, ty)] for k in range(3)))
    f0, info0 = env.reset(seed=0, options={"start": (x0, y0)})
    f1, _, _, _, info1 = env.step(act("right"))
    assert info1["moved"] and info1["x"] == info0["x"] + 0.25
    shift = env.ts // 4  # a quarter tile in pixels
    body = np.ones(f0.shape[:2], bool)
    c = env.size // 2
    body[c - env.ts : c + env.ts, :] = False  # leave out the player's rows
    same_shifted = (f1[:, :-shift] == f0[:, shift:]).all(-1)[body[:, :-shift]].mean()
    same_still = (f1 == f0).all(-1)[body].mean()
    assert same_shifted > 0.8 > same_still
    # the player stays at the centre, now facing right
    for frame, facing in ((f0, info0["facing"]), (f1, 3)):
        rgb, mask = env.art.player[facing]
        tile = frame[c - env.ts // 2 : c + env.ts // 2, c - env.ts // 2 : c + env.ts // 2]
        assert np.array_equal(tile[mask], rgb[mask])


def test_water_and_trees_block():
    env = OverworldEnv()
    # a walkable tile with a solid one to its right
    tx, ty = _find(
        env, 3, lambda e, x, y: not art.SOLID[e.terrain_at(x, y)] and art.SOLID[e.terrain_at(x + 1, y)]
    )
    env.reset(seed=3, options={"start": (tx, ty)})
    _, _, _, _, info = env.step(act("right"))
    assert info["moved"] and not info["blocked"]  # up to the edge of the tile
    x = info["x"]
    for _ in range(3):
        _, _, _, _, info = env.step(act("right"))
        assert info["blocked"] and not info["moved"] and info["x"] == x


def test_pick_up_carry_drop_and_it_stays():
    env = OverworldEnv()

    def corridor_with_item(e, x, y):
        return e.item_at(x, y) and all(
            not art.SOLID[e.terrain_at(x + k, y)] and (k == 0 or e.item_at(x + k, y) == 0) for k in range(15)
        )

    tx, ty = _find(env, 11, corridor_with_item)
    env.reset(seed=11, options={"start": (tx, ty)})
    kind = env.item_at(tx, ty)
    _, r, _, _, info = env.step(act("action"))
    assert info["holding"] == kind and r == 1.0 and info["event"] == 1 and env.item_at(tx, ty) == 0
    _, r, _, _, info = env.step(act("action"))  # still held down: nothing more happens
    assert info["holding"] == kind and info["event"] == 0

    for _ in range(48):  # 12 tiles to the right
        _, _, _, _, info = env.step(act("right"))
    assert info["x"] == tx + 12.5
    frame_drop, _, _, _, info = env.step(act("action"))
    assert info["event"] == 2 and info["holding"] == 0 and env.item_at(tx + 13, ty) == kind

    for _ in range(52):  # walk away until it is far out of view ...
        env.step(act("left"))
    for _ in range(52):  # ... and come back
        frame_back, _, _, _, info = env.step(act("right"))
    assert info["x"] == tx + 12.5 and env.item_at(tx + 13, ty) == kind
    ts, c = env.ts, env.size // 2
    item_px = (slice(c - ts // 2 + 1, c + ts // 2 - 1), slice(c + ts // 2 + 1, c + ts + ts // 2 - 1))
    assert np.array_equal(frame_drop[item_px], frame_back[item_px])
    assert not np.array_equal(frame_back[item_px], env.art.tiles[0][1 : ts - 1, 1 : ts - 1])


def test_world_moves_on_its_own():
    env = OverworldEnv()
    # beside water, with no-op input: the water animates and slimes wander
    tx, ty = _find(
        env, 2, lambda e, x, y: not art.SOLID[e.terrain_at(x, y)] and e.terrain_at(x, y + 1) == art.WATER
    )
    first, info0 = env.reset(seed=2, options={"start": (tx, ty)})
    creatures0 = [(c.x, c.y) for k in sorted(env._creatures) for c in env._creatures[k]]
    frames = [env.step(NOOP)[0] for _ in range(40)]
    _, _, _, _, info = env.step(NOOP)
    assert (info["x"], info["y"]) == (info0["x"], info0["y"])
    assert sum(not np.array_equal(first, f) for f in frames) > 20
    creatures1 = [(c.x, c.y) for k in sorted(env._creatures) for c in env._creatures[k]]
    assert len(creatures0) == len(creatures1) > 0 and creatures0 != creatures1


def test_make_game_and_info():
    env = make_game("overworld", size=64)
    _, info = env.reset(seed=0)
    for key in ("x", "y", "facing", "holding", "moved", "blocked", "event", "terrain", "frame"):
        assert key in info
    with pytest.raises(ValueError, match="unknown game"):
        make_game("pong")
    with pytest.raises(ValueError, match="size 4"):
        env.step(np.zeros(4))


def _find(env, seed, pred, radius=150):
    """A tile near the origin of world `seed` satisfying pred(env, tx, ty)."""
    env.reset(seed=seed)
    for r in range(radius):
        for tx in range(-r, r + 1):
            for ty in (-r, r):
                if pred(env, tx, ty):
                    return tx, ty
    raise AssertionError("no such tile found")


def test_forgetting_far_chunks_changes_nothing(monkeypatch):
    import worldmodel.games.overworld as ow

    actions = [act("right")] * 150 + [act("down")] * 150 + [act("left")] * 150 + [act("up")] * 150
    full = rollout(OverworldEnv(), 4, actions)
    monkeypatch.setattr(ow, "MAX_CACHED_CHUNKS", 12)
    env = OverworldEnv()
    small = rollout(env, 4, actions)
    assert len(env._chunks) <= 12
    assert np.array_equal(full, small)
