"""Summarise a training run: loss curves (PNG), each stage's steps and time, the held-out PSNR.

    python -m worldmodel.train.report RUN --out docs/training --name tiny-cpu

Writes <name>-losses.png and <name>.md (and copies RUN/play.webm to <name>-play.webm when there).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

STAGES = ("ae", "teacher", "student", "ar", "ode", "self-forcing")


def load(run: Path) -> dict:
    out = {}
    for stage in STAGES:
        path = run / stage / "history.json"
        if path.is_file():
            out[stage] = json.loads(path.read_text())
    return out


def throughput(run: Path, stage: str) -> dict:
    path = run / stage / "throughput.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def smooth(xs, k: int = 5):
    out, acc = [], []
    for x in xs:
        acc.append(x)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def plot(histories: dict, path: Path, title: str) -> list[str]:
    """One panel of loss curves per stage that logged a loss (a stage kept as given, such as the
    autoencoder of a continued world, logs none and gets no empty panel); returns those stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = {
        s: rows for s, rows in histories.items() if any(k.startswith("loss/") for r in rows for k in r)
    }
    if not histories:
        return []
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4), squeeze=False)
    for ax, (stage, rows) in zip(axes[0], histories.items(), strict=True):
        keys = sorted({k for r in rows for k in r if k.startswith("loss/")})
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            ax.plot([p[0] for p in pts], smooth([p[1] for p in pts]), label=k.split("/")[1])
        evals = [(r["step"], r["eval/psnr_held_out"]) for r in rows if "eval/psnr_held_out" in r]
        if evals:
            ax2 = ax.twinx()
            ax2.plot([e[0] for e in evals], [e[1] for e in evals], "k.--", label="held-out PSNR")
            ax2.set_ylabel("PSNR (dB)")
        ax.set_yscale("log")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return list(histories)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldmodel.train.report")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="run")
    p.add_argument("--title", default=None)
    p.add_argument("--command", default="", help="the command that made the run, for the record")
    args = p.parse_args(argv)
    histories = load(args.run)
    if not histories:
        print(f"error: no stage history under {args.run}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.name}-losses.png"
    plotted = plot(histories, png, args.title or f"training run {args.name}")
    summary = {}
    if (args.run / "summary.json").is_file():
        summary = json.loads((args.run / "summary.json").read_text())
    lines = [f"# Training run `{args.name}`", ""]
    if args.command:
        lines += [f"Command: `{args.command}`", ""]
    lines += [
        "| stage | steps | time | first loss | last loss | samples/s | TFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in ("ae", "encode", "teacher", "student", "ode", "self-forcing"):
        secs = summary.get("seconds", {}).get(stage)
        rows = histories.get(stage, [])
        if stage == "student" and not rows:
            continue  # a student of the teacher's shape has no stage of its own
        loss_key = "loss/generator"
        losses = [r[loss_key] for r in rows if loss_key in r]
        if stage == "self-forcing":
            losses = [r["loss/critic"] for r in rows if "loss/critic" in r]
        first = f"{sum(losses[:3]) / len(losses[:3]):.4f}" if losses else "-"
        last = f"{sum(losses[-3:]) / len(losses[-3:]):.4f}" if losses else "-"
        steps = summary.get("steps", {}).get(stage) or (rows[-1]["step"] if rows else "-")
        t = f"{secs / 60:.1f} min" if secs is not None else "-"
        tp = throughput(args.run, stage)
        rate = f"{tp['samples_per_s']:.1f}" if tp.get("samples_per_s") else "-"
        tflops = f"{tp['tflops']:.2f}" if tp.get("tflops") else "-"
        lines.append(f"| {stage} | {steps} | {t} | {first} | {last} | {rate} | {tflops} |")
    psnr = [r["eval/psnr_held_out"] for r in histories.get("ae", []) if "eval/psnr_held_out" in r]
    lines += ["", "Self-forcing's column is the critic's flow loss (DMD's loss is a step size, not a score)."]
    devices = {throughput(args.run, st).get("device") for st in STAGES} - {None}
    if devices:
        lines += [
            "",
            f"samples/s: training samples (frames for ae, clips otherwise) per second over the timed steps; "
            f"TFLOP/s: FLOPs of one step counted by torch.utils.flop_counter, times steps, over that time "
            f"({', '.join(sorted(devices))}).",
        ]
    if psnr:
        lines += ["", f"Autoencoder held-out PSNR at the last evaluation: {psnr[-1]:.2f} dB."]
    final = summary.get("final")
    if final:  # `train all --final`: which student is the run's model, and why
        lines += ["", f"The run's model is the {final['stage']} stage's student: {final['why']}."]
    lines += ["", f"![loss curves]({png.name})", ""] if plotted else [""]
    video = args.run / "play.webm"
    if video.is_file():
        shutil.copyfile(video, args.out / f"{args.name}-play.webm")
        lines += [f"A scripted playthrough of the result: [{args.name}-play.webm]({args.name}-play.webm)", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {png} and {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
