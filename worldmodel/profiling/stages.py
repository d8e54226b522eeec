"""Measure a WorldSession: time per frame by stage, and memory over a long session.

    python -m worldmodel.profiling stages --preset tiny --device cpu --out docs/benchmarks
    python -m worldmodel.profiling memory --preset tiny --steps 20000 --out docs/benchmarks

`stages` plays `--frames` frames with random held actions after a warm-up and reports, per
stage (each denoising pass, the cache pass, the decode) and for the whole frame, the median
and the 90th/99th percentiles in ms, plus frames per second. `memory` plays a long session
and samples the process's resident memory (and CUDA memory on a GPU): the ring cache is
preallocated, so it must stay flat. Each writes JSON and a Markdown table, with the machine
and the command that produced them. Random weights: speed and memory do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..runtime.session import WorldSession
from .measure import machine, measure_stages, memory_soak


def _write(out: Path, name: str, result: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=2) + "\n"), (".md", markdown)):
        path = out / f"{name}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(f"wrote {out / name}.json and .md")


def stages_markdown(r: dict) -> str:
    m, cfg = r["machine"], r["config"]
    lines = [
        f"# WorldSession time per frame: `{cfg['name']}` preset on {m['device']}",
        "",
        f"Command: `{r['command']}`",
        "",
        f"{cfg['frame_height']}x{cfg['frame_width']} frames, {cfg['steps']} denoising steps, "
        f"chunk {cfg['chunk']}, window {cfg['window']} + {cfg['sinks']} sink, "
        f"{cfg['depth']} layers of width {cfg['dim']}; random weights, "
        f"random held actions; {r['frames']} frames after {r['warmup']} of warm-up (cache full).",
        "",
        "| stage | median ms | p90 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for k, v in r["stages"].items():
        name = f"**{k}**" if k == "total" else k
        lines.append(f"| {name} | {v['median']:.2f} | {v['p90']:.2f} | {v['p99']:.2f} |")
    lines += [
        "",
        f"**{r['fps']:.1f} frames/s** (1000 / median total). "
        f"Backend {m['backend']}, PyTorch {m['torch']}, Python {m['python']}, {m['dtype']}, "
        f"OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}.",
        "",
    ]
    return "\n".join(lines)


def memory_markdown(r: dict) -> str:
    m, cfg = r["machine"], r["config"]
    rows = [
        s
        for s in r["samples"]
        if s["step"] in (1000, 2000, 5000, 10000, 15000, 20000) or s is r["samples"][-1]
    ]
    lines = [
        f"# WorldSession memory over a long session: `{cfg['name']}` preset on {m['device']}",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Resident memory after {r['first_step']:,} steps: {r['rss_first_mb']:.1f} MB; "
        f"after {r['last_step']:,}: {r['rss_last_mb']:.1f} MB (**{r['change_pct']:+.2f}%**). "
        f"The KV cache ring is {r['cache_mb']:.2f} MB, "
        "preallocated at construction and written in place.",
        "",
        "| step | resident MB | elapsed s |",
        "|---|---|---|",
    ]
    for s in rows:
        lines.append(f"| {s['step']:,} | {s['rss_mb']:.1f} | {s['elapsed_s']:.0f} |")
    lines += ["", f"PyTorch {m['torch']}, Python {m['python']}, {m['dtype']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldmodel.profiling", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["stages", "memory"])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="eager", help="eager or triton (see WorldSession)")
    p.add_argument("--frames", type=int, default=300, help="stages: frames measured")
    p.add_argument("--steps", type=int, default=20000, help="memory: session length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON and Markdown (default: print)")
    args = p.parse_args(argv)
    session = WorldSession.from_preset(args.preset, seed=args.seed, device=args.device, backend=args.backend)
    command = "python -m worldmodel.profiling " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.what == "stages":
        r = measure_stages(session, args.frames, seed=args.seed)
        name, md = f"session-{session.device.type}", stages_markdown
        if args.preset != "tiny" or session.backend != "eager":
            name += f"-{args.preset}-{session.backend}"
    else:
        r = memory_soak(
            session,
            args.steps,
            seed=args.seed,
            progress=lambda s: print(f"step {s['step']:>6}: {s['rss_mb']:.1f} MB", flush=True),
        )
        name, md = f"session-memory-{session.device.type}", memory_markdown
    r.update(machine=machine(session), config=session.cfg.to_dict(), command=command)
    if args.out:
        _write(args.out, name, r, md(r))
    else:
        print(md(r))
    return 0
