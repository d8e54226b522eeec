"""Is a student's long-run collapse its own, or its long cache's? Its long rollouts as played (one
WorldSession, the ring cache rolling), beside the same student restarted every N frames from its own
last 2 frames (a fresh cache each time), from the ladder's four starts under the ladder's scripted keys,
both measured as the ladder measures them (visible, OOD, FD/twin, composition).

    python tools/restart_check.py RUN/ode/model.safetensors --test-data T [--every 10] --out PREFIX

Writes PREFIX.json and PREFIX.png (per start: played at 100 and 300, restarted at 100 and 300).
"""

import argparse
import json

import numpy as np

from worldmodel.data import format as fmt
from worldmodel.data.show import write_png
from worldmodel.eval.rollouts import FrameMeter, episode_palette, paired_rollout, scripted_actions
from worldmodel.eval.ruler import load_ruler, shipped_ruler
from worldmodel.eval.rungs import pooled_long
from worldmodel.games import player_check, replay_env
from worldmodel.model.checkpoint import load_checkpoint
from worldmodel.runtime.session import WorldSession

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("--test-data", required=True)
p.add_argument("--test-episodes", type=int, default=4)
p.add_argument("--every", type=int, default=10)
p.add_argument("--frames", type=int, default=300)
p.add_argument("--out", required=True)
args = p.parse_args()
every, T = args.every, args.test_data
m = fmt.Manifest.load(T)
eps = [fmt.open_episode(T, m, e) for e in m.episodes[-args.test_episodes :]]
ruler = load_ruler(shipped_ruler(m.game, m.resolution, m.action_space.keys))
check = player_check(m.game, {**m.game_config, "size": m.height})
pal = episode_palette(eps, 0)
env = replay_env(m.game, {**m.game_config, "size": m.height})
model = load_checkpoint(args.checkpoint, "cpu")[0].float().eval()
s = WorldSession(model, None, "cpu")
gens, twins, shots = {"played": [], "restarted": []}, [], []
for i, ep in enumerate(eps):
    start = np.array(ep.frames[0])
    script = scripted_actions(m.action_space, args.frames, 1000 + i)  # the ladder's keys for start i
    tm = FrameMeter(ruler, check, (), palette=pal)
    paired_rollout(None, env, ep.meta.get("seed"), start, script, None, tm, 0)
    twins.append(tm.result())
    row = []
    for mode in ("played", "restarted"):
        keep = (min(100, args.frames), args.frames)
        meter = FrameMeter(ruler, check, keep, palette=pal)
        s.reset(np.stack([start, start]), seed=100 + i)
        last = [start, start]
        for t, a in enumerate(script):
            if mode == "restarted" and t and t % every == 0:
                s.reset(np.stack(last[-2:]), seed=100 + i + 7 * t)
            f = s.step(a)
            last.append(f)
            meter.add(f)
        gens[mode].append(meter.result())
        row += [meter.kept[k] for k in keep]
    shots.append(np.concatenate(row, 1))
out = {}
for mode, g in gens.items():
    p = pooled_long(g, twins, ruler, 100)
    out[mode] = {k: p[k] for k in ("visible", "ood", "fd_over_twin", "composition")}
    out[mode]["visible_by_start"] = [x["visible"] for x in p["starts"]]
    print(mode, {k: v if isinstance(v, list) else round(v, 3) for k, v in out[mode].items()})
out["command"] = (
    f"python tools/restart_check.py {args.checkpoint} --test-data {T} --every {every} --out {args.out}"
)
write_png(f"{args.out}.png", np.concatenate(shots, 0).repeat(2, 0).repeat(2, 1))
with open(f"{args.out}.json", "w") as f:
    json.dump(out, f, indent=1)
