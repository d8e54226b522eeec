"""`worldmodel profile`'s report: profile.md (the table per backend, stages, attention's share) and
its PNG plots (latency timeline, stage breakdown, backend comparison)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime.backends import BackendOptions


def plots(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, path: Path) -> Path:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    title = f"{result['preset']} on {result['device']}"
    paths = []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, r in result["backends"].items():
        ax.plot(range(2, 2 + len(r["timeline_ms"])), r["timeline_ms"], lw=0.8, label=name)
    ax.set_xlabel("frame")
    ax.set_ylabel("ms per frame")
    ax.set_ylim(bottom=0)
    ax.set_title(f"latency timeline (cache filling, then steady): {title}", fontsize=9)
    ax.legend()
    paths.append(save(fig, out / "profile-timeline.png"))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(result["backends"])
    bottom = np.zeros(len(names))
    stage_names = [k for k in all_stages(result) if k != "total"]
    for st in stage_names:
        vals = np.array([result["backends"][n]["stages"].get(st, 0.0) for n in names])
        ax.bar(names, vals, bottom=bottom, label=st)
        bottom += vals
    ax.set_ylabel("median ms")
    ax.set_title(f"stage breakdown: {title}", fontsize=9)
    ax.legend(fontsize=7)
    paths.append(save(fig, out / "profile-stages.png"))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(names))
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        ax.bar(x + (i - 1) * 0.27, [result["backends"][n][q] for n in names], 0.27, label=q.split("_")[0])
    ax.set_xticks(x, names)
    ax.set_ylabel("ms per frame")
    ax.set_title(f"backends: {title}", fontsize=9)
    ax.legend()
    paths.append(save(fig, out / "profile-backends.png"))
    return paths


def all_stages(result: dict) -> list[str]:
    """Every backend's stage names, in first-seen order, "total" last (the compiled backend has one
    "generate" stage where the others have a stage per pass)."""
    names: dict[str, None] = {}
    for r in result["backends"].values():
        names.update(dict.fromkeys(k for k in r["stages"] if k != "total"))
    return [*names, "total"]


def _changed(options: dict | None) -> dict:
    """The backend options of a result that differ from the defaults."""
    default = BackendOptions().asdict()
    return {k: v for k, v in (options or {}).items() if default.get(k) != v}


def auto_note(result: dict) -> str:
    """What backend auto chose and the trial's figures behind it (empty when auto did not run)."""
    r = result["backends"].get("auto") or {}
    verdict = r.get("auto")
    if not verdict:
        return ""
    figures = ", ".join(
        f"{n} {v:.1f} ms" if isinstance(v, int | float) else f"{n}: {v}"
        for n, v in verdict.get("ms", {}).items()
    )
    how = "remembered from an earlier trial" if verdict.get("cached") else "timed at start"
    choice = verdict.get("choice", verdict["backend"])
    return f"`auto` ran `{choice}`: the fastest of a median frame each ({figures}; {how}).\n"


def markdown(result: dict) -> str:
    lines = [
        f"# `worldmodel profile`: {result['preset']} on {result['device']}",
        "",
        f"Command: `{result['command']}`"
        + "".join(f", with {k}={v}" for k, v in result.get("env", {}).items())  # older results
        + "".join(f", with option {k}={v}" for k, v in _changed(result.get("options")).items()),
        "",
        "End to end: every frame includes all denoising passes, the cache pass and the decode. Time to "
        "first frame includes building the session and the first step."
        + (
            " Each backend ran in a Python process of its own."
            if result.get("isolated")
            else " The backends ran one after another in one Python process."
            if len(result["backends"]) + len(result.get("failed", {})) > 1
            else ""
        ),
        "",
        "| backend | fps | p50 ms | p95 ms | p99 ms | ms per chunk | time to first frame | frames 1..W ms "
        "| frames W..10W ms | peak memory MB | KV cache MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(v):
        return f"{v:.2f}" if v is not None else "-"

    for name, r in result["backends"].items():
        fill = r["vs_cache_fill"]
        if r.get("auto"):  # backend auto: which one ran
            name = f"{name}: {r['backend']}"
        if r.get("providers"):
            name = f"{name} ({', '.join(p.removesuffix('ExecutionProvider') for p in r['providers'])})"
        lines.append(
            f"| {name} | {r['fps']:.1f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {ms(r.get('chunk_ms'))} | {r['ttff_s']:.2f} s | {ms(fill['frame_1_to_W_ms'])} "
            f"| {ms(fill['frame_W_to_10W_ms'])} | {r['peak_memory_mb']:.0f} | {r['kv_cache_mb']:.2f} |"
        )
    lines += [
        "",
        "With chunks of several frames, one frame in each chunk generates the whole chunk and the "
        "others only decode: fps and the percentiles are per frame, ms per chunk is a whole chunk's "
        "frames summed (median).",
    ]
    for name, why in result.get("failed", {}).items():
        lines += ["", f"**{name}: failed** ({why})."]
    lines += ["", "Median ms per stage:", ""]
    stage_names = all_stages(result)
    lines += ["| backend | " + " | ".join(stage_names) + " |", "|---" * (len(stage_names) + 1) + "|"]
    for name, r in result["backends"].items():
        cells = (f"{r['stages'][k]:.2f}" if k in r["stages"] else "-" for k in stage_names)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "generate" in stage_names:
        lines += ["", "`generate`: the compiled backend runs a chunk's passes as one call (one CUDA graph "
                  "on a GPU), so they are timed together."]  # fmt: skip
    split = {n: r["attention"] for n, r in result["backends"].items() if r.get("attention")}
    if split:
        lines += [
            "",
            "Attention vs the rest (torch.profiler over 20 frames: summed self time of the ops or kernels "
            "named as attention's, per frame; the profiler's own overhead inflates both):",
            "",
            "| backend | attention ms | rest ms | attention share | measured on |",
            "|---|---|---|---|---|",
        ]
        for n, a in split.items():
            share = f"{a['attention_share']:.0%}" if a["attention_share"] is not None else "-"
            lines.append(
                f"| {n} | {a['attention_ms_per_frame']:.2f} | {a['rest_ms_per_frame']:.2f} | {share} "
                f"| {a['measured_on']} |"
            )
    lines += [
        "",
        "![latency timeline](profile-timeline.png) ![stages](profile-stages.png) "
        "![backends](profile-backends.png)",
        "",
        f"PyTorch {result['torch']}, Python {result['python']}; {result.get('torch_threads')} PyTorch "
        f"threads, OMP_WAIT_POLICY={result.get('omp_wait_policy')}.",
        "",
    ]
    if note := auto_note(result):
        lines += ["", note]
    return "\n".join(lines)
