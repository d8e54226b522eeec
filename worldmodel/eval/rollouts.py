"""Rollouts of a model (and of the real game beside it) and the per-frame measures taken along them.

- `short_horizon`: from a real frame of each held-out episode (and the real frame before it), the
  model steps under the episode's recorded actions; generated frame t is compared with real frame t.
- `paired_rollout`: one long rollout under a fixed action sequence (scripted random keys, or no key at
  all), and beside it, in lockstep, its real twin: the same keys played by the real game from the same
  start (when the dataset's game is one this worldmodel has and its start frame reproduces). Both are
  measured frame by frame by `FrameMeter`s without keeping the frames; the twin is what a perfect
  model would have scored on the very same rollout, and each model frame is also compared with the
  twin's frame of the same time.
- `motion_moments` / `motion_agreement`: where the real game held one key for a few frames and its view
  moved every frame, or stood still every frame (a wall, water, a rock in the way), the model starts
  from the real frames and holds the same key; its view must move where the game's moved and stay
  where the game's stayed (`data.motion.view_shift` reads both).
"""

from __future__ import annotations

import time

import numpy as np

from ..data import format as fmt
from ..data.motion import VIEW_SHIFT_MAX, read_motion, view_shift
from . import metrics
from .settings import MOTION_FRAMES


def short_horizon(
    session, episodes: list[fmt.Episode], frames: int, seed: int = 0, say=print, context: int = 1
) -> dict:
    """Roll out `frames` frames from a real frame of each episode under its recorded actions, the
    session started from that frame and the `context - 1` real frames before it, each with the key that
    produced it (what every training stage draws after: two real frames; one frame is a session's
    start, padded with a copy, no key). Episode i of K starts at offset o = (context - 1) + round(i /
    (K - 1) * (len - frames - context)), so the starts spread over the episodes (context 1: the offsets
    of every report before 2026-12-06).
    Returns the generated and real clips (K, frames + 1, H, W, 3) (frame 0: the start frame), their
    actions (K, frames, A) and where each started."""
    k, c = len(episodes), int(context)
    gen, real, acts, starts = [], [], [], []
    t0 = time.perf_counter()
    for i, ep in enumerate(episodes):
        o = c - 1 + round(i * (len(ep) - frames - c) / max(k - 1, 1))
        clip = np.array(ep.frames[o - c + 1 : o + frames + 1])  # a copy: the memory map is read-only
        a = np.asarray(ep.actions[o : o + frames], np.float32)
        # the context with the keys that produced it, as training writes real frames; one frame is a
        # session's start, a player standing still
        caused = fmt.caused_keys(ep, o - c + 1, o + 1) if c > 1 else None
        g = [session.reset(clip[:c], seed=seed + i, actions=caused)]
        for t in range(frames):
            g.append(session.step(a[t]))
        gen.append(np.stack(g))
        real.append(clip[c - 1 :])
        acts.append(a)
        starts.append({"episode": ep.id, "start": int(o), "context": c})
        say(f"  episode {ep.id} from frame {o}: {frames} frames ({time.perf_counter() - t0:.0f} s)")
    return {"generated": np.stack(gen), "real": np.stack(real), "actions": np.stack(acts), "starts": starts}


def episode_palette(episodes: list[fmt.Episode], seed: int = 0) -> np.ndarray:
    """The game's palette (metrics.fit_palette) fitted on about 64 frames spread over each episode."""
    return metrics.fit_palette(
        np.concatenate([e.frames[:: max(1, len(e) // 64)] for e in episodes]), seed=seed
    )


def motion_moments(episodes: list[fmt.Episode], frames: int = MOTION_FRAMES, count: int = 32) -> dict:
    """Where each episode holds one key (not the no-key action) for `frames` frames and its view moves
    in every one of them ("move") or in none ("stop"), counting only the keys that move the view in at
    least a quarter of the frames they are held, so that a stop is a move the game refused (a wall), not
    a key that never moves anything. Up to `count` of each, spread evenly over the episodes. Returns
    {"move": [(episode index, frame)], "stop": [...], "shifts": per episode, its views' shifts (len - 1,
    2)}: at (i, t), the action of frame t is held for frames t .. t + frames - 1, and t >= 1, so that
    the model starts from two real frames. Both lists are empty for a game whose view does not scroll
    (and for frames too small to read a shift in)."""
    if not episodes or min(episodes[0].frames.shape[1:3]) <= 4 * VIEW_SHIFT_MAX:
        return {"move": [], "stop": [], "shifts": []}  # frames too small to read a shift in
    shifts, acts, moving = read_motion(episodes)
    moved = [s.any(1) for s in shifts]
    found: dict[str, list[tuple[int, int]]] = {"move": [], "stop": []}
    for i, (a, m) in enumerate(zip(acts, moved, strict=True)):
        t = 1  # from two real frames
        while t + frames <= len(a):
            run = a[t : t + frames]
            kind = None
            if run[0].tobytes() in moving and (run == run[0]).all():
                kind = "move" if m[t : t + frames].all() else "stop" if not m[t : t + frames].any() else None
            if kind:
                found[kind].append((i, t))
                t += frames
            else:
                t += 1
    pick = {
        k: [v[j] for j in np.linspace(0, len(v) - 1, min(count, len(v))).round().astype(int)] if v else []
        for k, v in found.items()
    }
    return {**pick, "shifts": shifts}


def motion_start(
    ep: fmt.Episode, t: int, frames: int = MOTION_FRAMES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A moment's real frames t - 1 and t (the model starts from them), the `frames` actions held from
    frame t, and the keys that produced frames t - 1 and t (2, A) (an episode's frame 0: none), which
    the model is given with them, as training gives its real context (before 2026-12-06: none)."""
    held = np.asarray(ep.actions[t : t + frames], np.float32)
    return np.array(ep.frames[t - 1 : t + 1]), held, fmt.caused_keys(ep, t - 1, t + 1)


def motion_scores(
    episodes: list[fmt.Episode], moments: dict, generated: dict, frames: int = MOTION_FRAMES
) -> dict:
    """Score a model's frames at `moments` (motion_moments over `episodes`): `generated` {kind: (M,
    frames, H, W, 3)}, the frames after each moment's frame t. Per kind, the share of frames whose view
    moved by the game's own shift ("move": the keys obeyed; "stop": the wall kept), the same at the
    first frame, and their mean over the two kinds ("kept"; 1 for the game itself; a world that ignores
    walls scores about 1 and 0, a frozen one 0 and 1, both about 0.5). None for a kind without
    moments."""
    out: dict = {"frames": frames}
    for kind in ("move", "stop"):
        a = moment_agreement(episodes, moments, kind, generated.get(kind, ()), frames)
        out[kind] = {
            "moments": len(a),
            "agree": float(a.mean()) if len(a) else None,
            "agree_first": float(a[:, 0].mean()) if len(a) else None,
        }
    both = [out[k]["agree"] for k in ("move", "stop")]
    out["kept"] = None if None in both else float(np.mean(both))
    return out


def moment_agreement(
    episodes: list[fmt.Episode], moments: dict, kind: str, generated, frames: int = MOTION_FRAMES
) -> np.ndarray:
    """(M, frames) bool: at each of `moments[kind]`, whether each generated frame's view moved by the
    game's own shift (motion_scores' per-frame reading)."""
    agree = []
    for (i, t), gen in zip(moments[kind], generated, strict=True):
        seq = np.concatenate([np.asarray(episodes[i].frames[t : t + 1]), np.asarray(gen)])
        agree.append((view_shift(seq[:-1], seq[1:]) == moments["shifts"][i][t : t + frames]).all(1))
    return np.array(agree, bool).reshape(-1, frames)


def motion_frames(
    session, episodes: list[fmt.Episode], moments: dict, frames: int = MOTION_FRAMES, seed: int = 0
) -> dict:
    """{kind: [(frames, H, W, 3)]}: a WorldSession started from each moment's two real frames (with the
    keys that produced them), holding the key the game held (moment j of a kind seeded seed + j)."""
    generated = {}
    for kind in ("move", "stop"):
        generated[kind] = []
        for j, (i, t) in enumerate(moments[kind]):
            context, actions, caused = motion_start(episodes[i], t, frames)
            session.reset(context, seed=seed + j, actions=caused)
            generated[kind].append(np.stack([session.step(a) for a in actions]))
    return generated


def motion_agreement(
    session, episodes: list[fmt.Episode], moments: dict, frames: int = MOTION_FRAMES, seed: int = 0
) -> dict:
    """`motion_scores` of `motion_frames`."""
    return motion_scores(episodes, moments, motion_frames(session, episodes, moments, frames, seed), frames)


def scripted_actions(space, frames: int, seed: int) -> np.ndarray:
    """(frames, A) actions of the `random` recording agent (each random key set held 1-15 frames),
    seeded: the scripted play of a long rollout, the same for the model and its real twin."""
    from ..games.agents import RandomAgent

    agent = RandomAgent()
    agent.reset(seed, space)
    return (
        np.stack([space.canonical(agent.act(None, {})) for _ in range(frames)])
        if frames
        else np.zeros((0, space.size), np.float32)
    )


class FrameMeter:
    """Measures a stream of frames (generated frame 1, 2, ... of a rollout) in blocks: the ruler's
    standardised features, the distance to the nearest reference frame, the high-frequency energy, the
    game's player check when it has one, the composition over a `palette` when given
    (metrics.composition, its last column the frames out of the ruler's distribution), the PSNR
    against a `truth` frame given beside each frame (the real twin's), and, for frames added with the
    `action` that produced them after `begin(start)`, the ruler's probe's reading of the keys from
    each frame and the one before it (action following along the whole rollout, not only its first
    frames). Keeps only the frames whose index is in `keep`."""

    def __init__(self, ruler, player_check=None, keep=(), block: int = 250, palette=None):
        self.ruler, self.check, self.keep, self.block = ruler, player_check, set(keep), block
        self.palette = palette
        self.count = 0
        self.kept: dict[int, np.ndarray] = {}
        self._buf: list[np.ndarray] = []
        self._truth: list[np.ndarray] = []
        self._last: np.ndarray | None = None  # the frame before the next one, for the probe
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (frame before, action) per buffered frame
        self._parts: dict[str, list[np.ndarray]] = {
            "features": [],
            "nearest": [],
            "outside": [],
            "hf": [],
            "visible": [],
            "psnr": [],
            "composition": [],
            "keys_read": [],
            "keys_pressed": [],
        }

    def begin(self, start: np.ndarray) -> None:
        """The frame the rollout starts from: frame 1 is read against it."""
        self._last = np.array(start)

    def add(self, frame: np.ndarray, truth: np.ndarray | None = None, action=None) -> None:
        self.count += 1
        if self.count in self.keep:
            self.kept[self.count] = np.array(frame)
        if action is not None and self._last is not None:
            self._pairs.append((self._last, np.asarray(action, np.float32)))
        self._last = frame
        self._buf.append(frame)
        if truth is not None:
            self._truth.append(truth)
        if len(self._buf) >= self.block:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        x = np.stack(self._buf)
        if self._truth:  # the twin may have ended inside this block
            t = np.stack(self._truth)
            self._parts["psnr"].append(metrics.psnr(x[: len(t)], t))
        if self._pairs and len(self._pairs) == len(x) and self.ruler.probe is not None:
            from .probe import predict_keys

            read = predict_keys(self.ruler.probe, np.stack([p for p, _ in self._pairs]), x)
            self._parts["keys_read"].append(read > 0.5)
            self._parts["keys_pressed"].append(
                np.stack([a for _, a in self._pairs])[:, : read.shape[1]] > 0.5
            )
        self._buf, self._truth, self._pairs = [], [], []
        f = self.ruler.features(x)
        near = self.ruler.nearest(f)
        self._parts["features"].append(f.astype(np.float32))
        self._parts["nearest"].append(near)
        foreign = self.ruler.outside(near, self.ruler.patch_scores(x))
        self._parts["outside"].append(foreign)
        self._parts["hf"].append(metrics.high_frequency_energy(x))
        if self.check is not None:
            self._parts["visible"].append(self.check.visible(x))
        if self.palette is not None:  # a frame the ruler finds foreign is made of "not the game"
            self._parts["composition"].append(metrics.composition(x, self.palette, foreign=foreign))

    def result(self) -> dict:
        """{"features": (N, D), "nearest": (N,), "outside": (N,) bool, out of the ruler's
        distribution by both its tests (Ruler.outside), "hf": (N,), "visible": (N,) bool or None, "psnr": (M,)
        against the truth (M <= N frames had one) or None, "composition": (N, k + 1) or None (the last
        column: out of distribution),
        "keys_read" and "keys_pressed": (N, K) bool, what the probe read from frame i + 1 and the one
        before it and what was pressed, or None}: row i is frame i + 1 of the rollout."""
        self._flush()
        out = {k: (np.concatenate(v) if v else None) for k, v in self._parts.items()}
        if self.check is None:
            out["visible"] = None
        if out["keys_read"] is not None and len(out["keys_read"]) != self.count:
            out["keys_read"] = out["keys_pressed"] = None  # some frames came without an action
        return out


def key_accuracy(measured: dict, sl: slice = slice(None)) -> float | None:
    """The share of frames in `sl` whose every key the probe read as pressed or not as it was (the
    `exact` accuracy of probe.action_accuracy), from a FrameMeter result; None without readings."""
    from .probe import action_accuracy

    read, pressed = measured.get("keys_read"), measured.get("keys_pressed")
    if read is None or pressed is None or not len(read[sl]):
        return None
    return action_accuracy(read[sl], pressed[sl], ())["exact"]


def over_twin(a: float | None, b: float | None) -> float | None:
    """a / b: a model's figure over its real twin's; None when either is missing or b is 0."""
    return a / b if a is not None and b else None


def start_twin(env, world_seed, start_frame) -> str | None:
    """Reset the real game to the rollout's start: None when it is there; else why there is no twin
    (no env, no seed, or the reset frame is not the rollout's start frame)."""
    if env is None:
        return "the dataset's game is not one this worldmodel can run"
    if world_seed is None:
        return "the start episode records no world seed"
    obs, _ = env.reset(seed=int(world_seed))
    if not np.array_equal(obs, start_frame):
        return "the game's reset frame differs from the recorded start frame"
    return None


def paired_rollout(
    session,
    env,
    world_seed,
    start_frame,
    actions: np.ndarray,
    meter: FrameMeter,
    twin_meter: FrameMeter,
    seed: int,
    name: str = "",
    say=print,
    read_keys: bool = True,
) -> tuple[str | None, float]:
    """Play the model (`session`, None for none) and its real twin (the game `env` from world
    `world_seed`) in lockstep from `start_frame` under `actions`, one row per frame: each model frame
    into `meter` with the twin's frame as its truth, each twin frame into `twin_meter`. The model starts
    from the start frame (the session writes START_CONTEXT copies of it). An episode that ends (a
    Crafter death) ends the twin early. With `read_keys`, both meters read the keys along the rollout
    (FrameMeter.begin); not idle, where the probe reads still frames as the keys a blocked move leaves.
    Returns (why there is no twin, or None; the model's seconds)."""
    missing = start_twin(env, world_seed, start_frame)
    for m in (meter, twin_meter):
        if m is not None and read_keys:
            m.begin(start_frame)
    if session is not None:
        session.reset(start_frame, seed=seed)
    twin_alive, spent = missing is None, 0.0
    t0 = time.perf_counter()
    n = len(actions)
    report_every = max(1, n // 10)
    for i in range(n):
        truth = None
        if twin_alive:
            truth, _, terminated, truncated, _ = env.step(actions[i])
            twin_meter.add(truth, action=actions[i])
            twin_alive = not (terminated or truncated)
        if session is not None:
            t1 = time.perf_counter()
            frame = session.step(actions[i])
            spent += time.perf_counter() - t1
            meter.add(frame, truth, action=actions[i])
        if session is not None and (i + 1) % report_every == 0:
            el = time.perf_counter() - t0
            say(
                f"  {name}: {i + 1}/{n} frames, {(i + 1) / el:.1f} fps, "
                f"{(n - i - 1) * el / (i + 1) / 60:.1f} min left"
            )
    return missing, spent


def bucket_stats(measured: dict, ruler, ranges: list[tuple[int, int]]) -> list[dict]:
    """Per bucket (first, last) of frame indices (1-based, inclusive): FD to the reference and over the
    floor of that bucket size, the out-of-distribution share, the player-visible share, the
    sharpness (high-frequency energy over the real reference's) and, where the frames were measured over
    a palette, the bucket's mean palette shares and variety (effective colours per frame, metrics.variety).
    Buckets past the rollout's end are left out."""
    n = len(measured["outside"])
    out = []
    for first, last in ranges:
        if last > n:
            break
        sl = slice(first - 1, last)
        size = last - first + 1
        fd = ruler.frechet(measured["features"][sl])
        floor = ruler.floor(size)
        vis, ps = measured["visible"], measured.get("psnr")
        out.append(
            {
                "first": first,
                "last": last,
                "fd": fd,
                "floor": floor,
                "fd_over_floor": fd / floor if floor else None,
                "ood": float(measured["outside"][sl].mean()),
                "visible": None if vis is None else float(vis[sl].mean()),
                "psnr_twin": float(ps[sl].mean()) if ps is not None and len(ps) >= last else None,
                "sharpness": float(measured["hf"][sl].mean() / ruler.hf_energy)
                if ruler.hf_energy > 0
                else None,
                "action_accuracy": key_accuracy(measured, sl),
                "shares": None
                if measured.get("composition") is None
                else measured["composition"][sl].mean(0).round(4).tolist(),
                "variety": None
                if measured.get("composition") is None
                else float(metrics.variety(measured["composition"][sl]).mean()),
            }
        )
    return out


def bucket_ranges(
    frames: int, bucket: int, early: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(the early bucket [(1, early)], the regular buckets [(1, b), (b + 1, 2 b), ...]; a last partial
    bucket is dropped)."""
    early_r = [(1, early)] if frames >= early else []
    return early_r, [(i * bucket + 1, (i + 1) * bucket) for i in range(frames // bucket)]
