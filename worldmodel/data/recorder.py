"""Record episodes of a game played by an agent into a dataset (worldmodel/data/format.py).

Episode k of a run with base seed s uses world seed and agent seed drawn from
SeedSequence([s, k]), so a dataset is reproducible whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..games import make_game
from ..games.agents import make_agent
from . import format as fmt
from . import writing

PROGRESS_EVERY = 50  # frames between a worker's progress messages


def episode_seeds(base_seed: int, number: int) -> tuple[int, int]:
    """(world seed, agent seed) of episode `number` of a run seeded `base_seed`."""
    env_seed, agent_seed = np.random.SeedSequence([int(base_seed), int(number)]).generate_state(2)
    return int(env_seed) & 0x7FFFFFFF, int(agent_seed)


def record_episode(
    env,
    agent,
    writer: writing.EpisodeWriter,
    steps: int | None,
    env_seed: int,
    agent_seed: int,
    progress=None,
) -> tuple[dict | None, bool]:
    """Play one episode into `writer`. Returns (manifest entry or None if empty, stop_requested).

    Stored per step t: the frame the agent saw, the action it took (as the game applied it),
    the reward that action earned, and the info describing that frame.
    """
    obs, info = env.reset(seed=env_seed)
    agent.reset(agent_seed, env.actions)
    terminated = stopped = False
    t = 0
    while steps is None or t < steps:
        action = agent.act(obs, info)
        if action is None:  # the player asked to stop
            stopped = True
            break
        action = getattr(env, "applied", env.actions.canonical)(action)  # as the game applied it
        writer.add(obs, action, info)
        obs, reward, term, trunc, info = env.step(action)
        writer.set_reward(reward)
        t += 1
        if progress is not None and t % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
        if term or trunc:
            terminated = bool(term)
            break
    if progress is not None and t % PROGRESS_EVERY:
        progress(t % PROGRESS_EVERY)
    if len(writer) == 0:
        writer.abort()
        return None, stopped
    return writer.finish(terminated=terminated), stopped


@dataclass
class RecordResult:
    manifest: fmt.Manifest
    episodes: list[dict]  # the entries added by this run
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def record(
    out: Path,
    game: str,
    agent,
    episodes: int,
    steps: int | None,
    seed: int = 0,
    workers: int = 1,
    game_kwargs: dict | None = None,
    show_progress: bool = True,
) -> RecordResult:
    """Record `episodes` episodes of `steps` frames each into dataset `out` (created or appended to).

    `agent` is a scripted agent's name ("random", "explore") or an agent object (run in this
    process; a human player is one). Killing the run keeps every finished episode.
    """
    out = Path(out)
    game_kwargs = dict(game_kwargs or {})
    env = make_game(game, **game_kwargs)
    frame_shape = env.observation_space.shape
    out.mkdir(parents=True, exist_ok=True)
    with writing.WriteLock(out):
        manifest = writing.open_for_writing(
            out, game, env.actions, env.metadata["render_fps"], frame_shape[:2], env.config
        )
        writing.clean_tmp(out)
        adopted, refused = writing.adopt_orphans(out, manifest)
        if adopted or refused:  # left by a killed run: complete episodes are kept, not lost
            print(
                f"{out}: adopted {len(adopted)} complete episode(s) an interrupted run left unlisted"
                + (f" ({', '.join(adopted[:6])}{', ...' if len(adopted) > 6 else ''})" if adopted else "")
                + "".join(f"\n  {line}" for line in refused),
                file=sys.stderr,
            )
        first = writing.next_episode_number(out, manifest)
        numbers = list(range(first, first + episodes))
        agent_name = agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)
        total = None if steps is None else steps * episodes
        bar = _progress_bar(total, f"recording {game}/{agent_name}", show_progress)
        added: list[dict] = []

        def keep(entry: dict):
            added.append(entry)
            manifest.episodes.append(entry)
            manifest.episodes.sort(key=lambda e: e["id"])
            manifest.save(out)

        t0 = time.perf_counter()
        try:
            if isinstance(agent, str) and workers > 1 and episodes > 1:
                _record_parallel(
                    out, game, game_kwargs, agent, numbers, steps, seed, workers, manifest, bar, keep
                )
            else:
                agent_obj = make_agent(agent) if isinstance(agent, str) else agent
                for n in numbers:
                    env_seed, agent_seed = episode_seeds(seed, n)
                    meta = {"seed": env_seed, "agent": agent_name, "agent_seed": agent_seed}
                    with writing.EpisodeWriter(
                        out, writing.episode_id(n), env.actions, frame_shape[:2], meta
                    ) as w:
                        entry, stopped = record_episode(
                            env, agent_obj, w, steps, env_seed, agent_seed, bar.update
                        )
                    if entry is not None:
                        keep(entry)
                    if stopped:
                        break
        finally:
            bar.close()
            writing.clean_tmp(out)
        seconds = time.perf_counter() - t0
    return RecordResult(manifest, added, sum(e["length"] for e in added), seconds)


def _record_parallel(out, game, game_kwargs, agent, numbers, steps, seed, workers, manifest, bar, keep):
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for n in numbers:
        tasks.put(n)
    procs = [
        ctx.Process(
            target=_worker,
            args=(out, game, game_kwargs, agent, steps, seed, tasks, results, os.getpid()),
            daemon=True,
        )
        for _ in range(min(workers, len(numbers)))
    ]
    for p in procs:
        tasks.put(None)  # one stop sign per worker
        p.start()
    remaining = len(numbers)
    try:
        while remaining:
            try:
                kind, payload = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("recorder workers exited without finishing their episodes") from None
                continue
            if kind == "frames":
                bar.update(payload)
            elif kind == "done":
                keep(payload)
                remaining -= 1
            elif kind == "error":
                raise RuntimeError(f"recorder worker failed:\n{payload}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)


def _die_with(parent: int) -> None:
    """A worker stops when the recorder that started it is gone (killed with -9, say): otherwise it
    would go on writing episodes that nobody lists."""
    import threading

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _worker(out, game, game_kwargs, agent_name, steps, seed, tasks, results, parent=None):
    if parent is not None:
        _die_with(parent)
    try:
        env = make_game(game, **game_kwargs)
        agent = make_agent(agent_name)
        shape = env.observation_space.shape[:2]
        while (n := tasks.get()) is not None:
            env_seed, agent_seed = episode_seeds(seed, n)
            meta = {"seed": env_seed, "agent": agent_name, "agent_seed": agent_seed}
            with writing.EpisodeWriter(out, writing.episode_id(n), env.actions, shape, meta) as w:
                entry, _ = record_episode(
                    env, agent, w, steps, env_seed, agent_seed, lambda k: results.put(("frames", k))
                )
            results.put(("done", entry))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _progress_bar(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True)
