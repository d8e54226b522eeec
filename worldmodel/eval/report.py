"""What `worldmodel eval` writes for people: eval.md, the curves, the contact sheet and the videos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .verdicts import long_figures


def _num(x, fmt_: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt_)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


# -- pictures --------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig, path: Path) -> None:
    plt = _pyplot()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot_short(path: Path, short: dict, title: str = "") -> None:
    """PSNR (with the held-still baseline), SSIM and sharpness per generated frame."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    x = np.arange(1, short["frames"] + 1)
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        m, sd = np.asarray(short[key]), np.asarray(short[f"{key}_std"])
        ax.plot(x, m, color="C0", label="model")
        ax.fill_between(x, m - sd, m + sd, color="C0", alpha=0.2)
        ax.set_ylabel(label)
    axes[0].plot(x, short["still_psnr"], color="grey", ls="--", label="start frame held still")
    axes[0].legend(fontsize=8)
    axes[2].plot(x, short["sharpness"], color="C1")
    axes[2].axhline(1.0, color="grey", ls="--", lw=1)
    axes[2].axhspan(0.8, 1.2, color="green", alpha=0.08)
    axes[2].set_ylabel("sharpness (HF energy / real)")
    for ax in axes:
        ax.axvline(short["headline_frames"], color="grey", ls=":", lw=1)
        ax.set_xlabel("generated frame")
        ax.grid(alpha=0.3)
    fig.suptitle(f"short horizon, {len(short['episodes'])} episode(s): {title}", fontsize=10)
    fig.tight_layout()
    save_fig(fig, path)


def plot_long(path: Path, longs: dict[str, dict], title: str = "") -> None:
    """Per bucket of the long rollouts, one column per condition: FD over the floor (log), the
    out-of-distribution share, the player-visible share; each model beside its real twin."""
    plt = _pyplot()
    rows = [
        ("fd_over_floor", "FD / real floor"),
        ("ood", "out of distribution"),
        ("visible", "player visible"),
    ]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 8), sharex="col")
    for col, cond in enumerate(("scripted", "idle")):
        for row, (key, label) in enumerate(rows):
            ax = axes[row, col]
            twin_done = False
            for i, (name, lg) in enumerate(longs.items()):
                e = (lg or {}).get(cond)
                if not e:
                    continue
                for part, style, who in (("", "-", name), ("twin_", "--", "real twin")):
                    pts = (e.get(f"{part}early") or []) + (e.get(f"{part}buckets") or [])
                    pts = [(b["last"], b[key]) for b in pts if b.get(key) is not None]
                    if not pts or (part and twin_done):
                        continue
                    ax.plot(
                        *zip(*pts, strict=True),
                        style,
                        marker="o",
                        ms=3,
                        color="grey" if part else f"C{i}",
                        label=who,
                    )
                    twin_done = twin_done or bool(part)
            if key == "fd_over_floor":
                ax.set_yscale("log")
                if cond == "scripted":
                    ax.axhline(10, color="red", ls=":", lw=1, label="goal: 10x")
            if key in ("ood", "visible"):
                ax.set_ylim(-0.05, 1.05)
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(cond)
                ax.legend(fontsize=7)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(rows) - 1:
                ax.set_xlabel("frames generated (end of bucket)")
    fig.suptitle(f"long rollouts: {title}", fontsize=10)
    fig.tight_layout()
    save_fig(fig, path)


def _label(width: int, text: str, height: int = 18) -> np.ndarray:
    import cv2

    img = np.full((height, width, 3), 24, np.uint8)
    cv2.putText(img, text, (3, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
    return img


def contact_sheet(path: Path, kept: dict, start: np.ndarray, at, scale: int = 2) -> None:
    """Rows: per condition, the real twin (when there is one) over the model; columns: the start frame
    then frames `at` (those reached). Written as a PNG."""
    import cv2

    h, w = start.shape[:2]
    big = lambda f: cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)  # noqa: E731
    blank = np.full((h * scale, w * scale, 3), 40, np.uint8)
    cols = [0] + [i for i in at if any(i in k["model"] for k in kept.values())]
    gap = np.full((h * scale, 2, 3), 255, np.uint8)
    rows = []
    name_w = 86
    header = [_label(name_w, "")] + [_label(w * scale + 2, f"frame {c}") for c in cols]
    rows.append(np.concatenate(header, 1))
    for cond, k in kept.items():
        for who in ("twin", "model"):
            frames = k.get(who) or {}
            if who == "twin" and not frames:
                continue
            cells = [
                np.concatenate([big(start) if c == 0 else big(frames[c]) if c in frames else blank, gap], 1)
                for c in cols
            ]
            tag = np.full((h * scale, name_w, 3), 24, np.uint8)
            cv2.putText(tag, cond, (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
            cv2.putText(
                tag,
                "real game" if who == "twin" else "model",
                (3, 34),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.42,
                (255, 214, 64) if who == "model" else (150, 220, 150),
                1,
                cv2.LINE_AA,
            )
            rows.append(np.concatenate([tag, *cells], 1))
            rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    from ..data.show import write_png

    write_png(path, np.concatenate(rows, 0), colours=256)


def side_by_side_video(path: Path, real: np.ndarray, gen: np.ndarray, fps: float, scale: int) -> None:
    """real | generated, with a 1-pixel white line between them."""
    from ..data.show import write_frames

    line = np.full((real.shape[1], 1, 3), 255, np.uint8)
    write_frames(
        path, [np.concatenate([r, line, g], axis=1) for r, g in zip(real, gen, strict=True)], fps, scale
    )


# -- eval.md ---------------------------------------------------------------------------------


def _bucket_table(e: dict) -> list[str]:
    has_twin = bool(e.get("twin_buckets"))
    head = "| frames | FD | x floor | OOD | visible | sharpness |"
    sep = "|---|---|---|---|---|---|"
    if has_twin:
        head += (
            " x twin | PSNR vs twin | composition vs twin | variety x twin | keys read, x twin "
            "| twin x floor | twin OOD | twin visible | twin sharpness |"
        )
        sep += "---|---|---|---|---|---|---|---|---|"
    lines = [head, sep]
    early, twin_early = e.get("early") or [], e.get("twin_early") or []
    if early and e.get("buckets") and early[0]["last"] == e["buckets"][0]["last"]:
        early, twin_early = [], []  # the early bucket is the first bucket
    mine = early + (e.get("buckets") or [])
    twin = (twin_early + (e.get("twin_buckets") or [])) if has_twin else []
    for i, b in enumerate(mine):
        row = (
            f"| {b['first']}-{b['last']} | {_num(b['fd'], '.2f')} | {_num(b['fd_over_floor'], '.1f')} | "
            f"{_pct(b['ood'])} | {_pct(b['visible'])} | {_num(b['sharpness'], '.2f')} |"
        )
        if has_twin:
            t = twin[i] if i < len(twin) else None
            row += (
                f" {_num(b.get('fd_over_twin'), '.2f')} | {_num(b.get('psnr_twin'), '.1f')} | "
                f"{_num(b.get('composition_vs_twin'))} | {_num(b.get('variety_vs_twin'), '.2f')} | "
                f"{_num(b.get('action_ratio_vs_twin'), '.2f')} |"
            )
            row += (
                f" {_num(t['fd_over_floor'], '.1f')} | {_pct(t['ood'])} | {_pct(t['visible'])} | "
                f"{_num(t['sharpness'], '.2f')} |"
                if t
                else " ended | | | |"
            )
        lines.append(row)
    return lines


def short_context(sh: dict) -> int:
    """How many real frames a report's short clips started from (reports before 2026-12-06 name none:
    one)."""
    return (sh.get("episodes") or [{}])[0].get("context", 1)


def _short_start(sh: dict) -> str:
    """How the short clips started, in a sentence."""
    c, n = short_context(sh), len(sh.get("episodes", ()))
    if c == 1:
        return (
            f"{n} clip(s), each from one real frame (padded with a copy of it, as a session's start is; "
            "`--short-context 1`)."
        )
    return (
        f"{n} clip(s), each from a real frame and the {c - 1} real frame(s) before it, with the keys that "
        f"produced them, as every training stage draws (`--short-context {c}`; reports made before "
        "2026-12-06 started from one frame)."
    )


def eval_markdown(r: dict) -> str:
    sh, af, lg, f = r["short_horizon"], r["action_following"], r.get("long"), r["files"]
    at = sh["headline_frames"]
    lines = [
        f"# Evaluation of `{r['checkpoint']}`",
        "",
        f"Dataset `{r['data']}`; device {r['device']} ({r['dtype']}); {r['seconds']['total']:.0f} s.",
        f"Command: `{r['command']}`",
        "",
    ]
    for w in r["warnings"]:
        lines += [f"**Warning:** {w}.", ""]
    if r["held_out"]["training_data_recorded"] and not r["held_out"]["overlaps"]:
        lines += [
            f"Held out: none of the {len(r['held_out']['episodes'])} evaluated episodes is among the "
            "episodes the model trained on (frames, world seed and start frame compared).",
            "",
        ]
    lines += ["## Verdict", ""]
    lines += [f"- **{'pass' if v['pass'] else 'FAIL'}**: {v['text']}" for v in r["verdicts"]]
    lines += ["", "## Headline", "", "| measure | model | real game | goal |", "|---|---|---|---|"]
    n = sh["frames"]
    if sh["visible"] is not None:
        lines.append(
            f"| player visible, frames 1-{n} under recorded keys | {_pct(sh['visible'])} | "
            f"{_pct(sh['visible_real'])} "
            "| >= 99 % |"
        )
    lines.append(
        f"| out of distribution, frames 1-{n} | {_pct(sh['ood'])} | {_pct(sh['ood_real'])} | <= 5 % |"
    )
    figures = long_figures(lg)
    for cond, e in figures.items():
        n = e.get("starts", 1)
        of = f", {n} starts" if n > 1 else ""
        worst = "worst bucket" + (f" of {n} starts" if n > 1 else "")
        if e.get("visible") is not None:
            lines.append(
                f"| player visible, {cond}, {lg['frames']} frames{of} | {_pct(e['visible'])} | "
                f"{_pct(e['twin_visible'])} | >= 99 % |"
            )
        lines.append(
            f"| out of distribution, {cond}, {lg['frames']} frames{of} | {_pct(e['ood'])} | "
            f"{_pct(e['twin_ood'])} "
            f"| {'<= 5 %' if e['twin_ood'] is None else '<= the real game + 5 points'} |"
        )
        if e.get("first_over_floor") is not None:
            lines.append(
                f"| FD / floor, {cond}, frames 1-{e['early_last']}{' (worst start)' if n > 1 else ''} | "
                f"{_num(e['first_over_floor'], '.1f')}x | {_num(e['twin_first_over_floor'], '.1f')}x | "
                f"{'<= 10x' if cond == 'scripted' else ''} |"
            )
        if e.get("action_ratio") is not None:
            low = e.get("worst_action_ratio")
            lines.append(
                f"| keys followed, {cond}: the probe's accuracy over the real twin's, all frames"
                + (f" / {worst}" if low is not None else "")
                + f" | {_num(e['action_ratio'], '.2f')}"
                + (f" / {_num(low, '.2f')}" if low is not None else "")
                + f" | 1 ({_pct(e['twin_action_accuracy'])} read right) | "
                f"{'>= 0.90' if cond == 'scripted' else ''} |"
            )
        if e.get("worst_over_twin") is not None:
            mean = e.get("mean_over_twin")
            lines.append(
                f"| FD over the real twin's in the same bucket, {cond}: "
                + ("mean of the buckets / " if mean is not None else "")
                + f"{worst} | "
                + (f"{_num(mean, '.2f')}x / " if mean is not None else "")
                + f"{_num(e['worst_over_twin'], '.2f')}x | 1x | {'<= 1.5x' if cond == 'scripted' else ''} |"
            )
        c = e.get("composition_over_walk")
        if c is not None:
            lines.append(
                f"| composition against the real twin's, {cond}: the bucket farthest beyond a second "
                f"real walk's{of} | {_num(c['model'])} | walk {_num(c['walk'])} | <= walk + 0.10 |"
            )
        elif e.get("worst_composition") is not None:
            lines.append(
                f"| composition against the real twin's, {cond}: {worst} (palette shares' total "
                f"variation; out of distribution counts as none of them) | "
                f"{_num(e['worst_composition'])} | 0 | |"
            )
        if e.get("worst_variety") is not None:
            lines.append(
                f"| variety against the real twin's, {cond}: {worst} (palette colours per frame, "
                f"1 out of distribution; below 1: a world emptied to grass or sea) | "
                f"{_num(e['worst_variety'], '.2f')} | 1 | |"
            )
        if e.get("drift") is not None:
            twin = e.get("worst_over_twin") is not None  # then the FD over the twin is the measure
            lines.append(
                f"| drift, {cond}: worst {lg['bucket']}-frame bucket's FD / the first's{of}"
                + (" (its own first: a world gone before its first bucket ends passes it)" if twin else "")
                + f" | x{_num(e['drift'], '.2f')} | x{_num(e.get('twin_drift'), '.2f')} | "
                + ("" if twin or cond != "scripted" else "<= 1.2x")
                + " |"
            )
        if cond == "idle" and e.get("worst_psnr_twin") is not None:
            lines.append(
                f"| PSNR against the real game, idle: first / {worst} | {e['first_psnr_twin']:.1f} / "
                f"{e['worst_psnr_twin']:.1f} dB | | >= PSNR@1 - 3 dB |"
            )
    lines += [
        f"| PSNR@1 (next frame) | {_num(sh['psnr_at_1'], '.2f')} dB | | >= 28 dB |",
        f"| PSNR@{at} | {_num(sh['psnr_at_16'], '.2f')} dB | start frame held still: "
        f"{_num(sh['still_psnr_at_16'], '.2f')} dB | >= 21 dB |",
        f"| SSIM@{at} | {_num(sh['ssim_at_16'])} | | |",
        f"| sharpness@{at} (HF energy / real) | {_num(sh['sharpness_at_16'], '.2f')} | 1.00 | 0.8-1.2 |",
        f"| action following (probe accuracy generated / real) | {_num(af['ratio'])} | "
        f"real pairs {_num(af['real_accuracy'])} | >= 0.90 |",
    ]
    mo = r.get("motion")
    if mo:
        lines.append(
            f"| walls and moves: the view moves as the game's under the key it held, {mo['frames']} frames "
            f"from real frames, where the game moves ({mo['move']['moments']}) / where a wall stops it "
            f"({mo['stop']['moments']}); their mean | {_num(mo['move']['agree'], '.2f')} / "
            f"{_num(mo['stop']['agree'], '.2f')}; {_num(mo['kept'], '.2f')} | 1 / 1; 1 | |"
        )
    lines += [
        "",
        "Per-key probe accuracy (real / generated): "
        + ", ".join(
            f"{k} {_num(af['real']['per_key'].get(k))} / {_num(af['generated']['per_key'].get(k))}"
            for k in af["real"]["per_key"]
        )
        + f". The probe on every real pair of the held-out episodes: {_num(af['heldout_real']['exact'])} "
        f"(always answering the commonest keys: {_num(af['heldout_real']['majority'])}); "
        "it cannot reach 1.0, "
        "since a blocked move, an idle frame or a key press with nothing to act on leaves no visible trace.",
        "",
    ]
    if mo:
        lines += [
            "Walls and moves: the probe reads a key from the player's sprite as well as from the world's "
            "motion, so a world that walks through walls still scores on it. Here the view's own shift is "
            "read (the offset that best maps one frame onto the next, the player's centre left out) in the "
            "model's frames and the game's: a world that ignores walls moves where the game stopped, a "
            "frozen one stays where the game moved; the mean of the two is 1 only for a world that does "
            "both. First frame alone: "
            f"{_num(mo['move']['agree_first'], '.2f')} / "
            f"{_num(mo['stop']['agree_first'], '.2f')}.",
            "",
        ]
    if lg:
        lines += [
            "## Long rollouts",
            "",
            f"{lg['frames']} frames from frame 0 of episode {lg['start']['episode']}; scripted: "
            f"{lg['scripted_policy']}; idle: no key. "
            + (
                f"Beside the model, its real twin: {lg['twin']}."
                if lg["twin"]
                else f"No real twin: {lg['twin_missing']}."
            ),
            "",
            f"![contact sheet]({f['sheet']})",
            "",
            f"![long rollouts]({f['long_png']})",
            "",
        ]
        each = (lg.get("over_starts") or {}).get("each") or []
        if len(each) > 1:
            lines += [
                f"Every start ({len(each)}; the sheet above and the tables below are the first's, "
                "each start's sheet is linked from its episode):",
                "",
                "| episode | scripted: visible | OOD | keys x twin | FD x twin, mean / worst "
                "| worst composition (walk) | idle: visible | OOD | worst PSNR vs the game |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            start_sheets = f.get("start_sheets") or {}
            for one in each:
                sc, idle = one.get("scripted") or {}, one.get("idle") or {}
                c = sc.get("composition_over_walk")
                ep = one["episode"]
                ep = f"[{ep}]({start_sheets[ep]})" if ep in start_sheets else ep
                lines.append(
                    f"| {ep} | {_pct(sc.get('visible'))} | {_pct(sc.get('ood'))} | "
                    f"{_num(sc.get('action_ratio'), '.2f')} | {_num(sc.get('mean_over_twin'), '.2f')} / "
                    f"{_num(sc.get('worst_over_twin'), '.2f')} | "
                    + (f"{_num(c['model'])} ({_num(c['walk'])})" if c else "n/a")
                    + f" | {_pct(idle.get('visible'))} | {_pct(idle.get('ood'))} | "
                    f"{_num(idle.get('worst_psnr_twin'), '.1f')} |"
                )
            lines.append("")
        for cond in ("scripted", "idle"):
            lines += [f"**{cond}**", "", *_bucket_table(lg[cond]), ""]
    ru = r["ruler"]
    floors = ", ".join(f"{k} frames {v:.3f}" for k, v in ru["floors"].items())
    lines += [
        "## Short horizon",
        "",
        _short_start(sh),
        "",
        f"![PSNR, SSIM and sharpness per frame]({f['short_png']})",
        "",
        f"Videos: [real | generated, short horizon]({f['short_video']})"
        + (
            f", [scripted, first frames]({f['scripted_video']}), [idle, first frames]({f['idle_video']})"
            if lg
            else ""
        ),
        "",
        "## The ruler",
        "",
        f"{ru['chosen']}: `{ru['path']}` (sha256 {(ru['sha256'] or '')[:12]}), "
        f"built from `{ru['data']}`: probe and "
        f"{ru['reference_frames']} reference frames from "
        f"{ru['episodes'].get('probe_and_reference', '?')} episode(s), "
        f"calibrated on {ru['calibration_frames']} frames of {ru['episodes'].get('calibration', '?')} other "
        f"episode(s). Out of distribution: farther from every reference frame than "
        f"{ru['nn_threshold']:.3f} in the probe's features (99 % of unseen real frames are nearer)"
        + (
            ", or holding two patches unlike any real frame's at that place"
            + (
                f" or a whole number of the game's {ru['patch_step']}-pixel scroll steps around it"
                if ru.get("patch_step")
                else ""
            )
            + f" (patch score over {ru['patch_threshold']:.3f}, 99 % of unseen real frames' are under)"
            if ru.get("patch_threshold") is not None
            else " (this ruler has no patch test: it predates it or had too few episodes)"
        )
        + f". Floors (FD of as many unseen real frames): {floors}.",
        "",
    ]
    return "\n".join(lines)
