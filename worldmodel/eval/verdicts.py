"""An eval's verdicts: each goal of a world that holds (settings.GOALS) with its figure from eval.json
and whether it is met."""

from __future__ import annotations

from .settings import GOALS

# how several starts' figures pool: shares over all their frames (the mean, as the rollouts are of one
# length), the worst-bucket figures as the worst of any start's buckets
_MEAN = (
    "visible",
    "ood",
    "twin_visible",
    "twin_ood",
    "action_accuracy",
    "twin_action_accuracy",
    "first_psnr_twin",
    "mean_over_twin",
)
_MAX = (
    "first_over_floor",
    "twin_first_over_floor",
    "worst_over_twin",
    "drift",
    "twin_drift",
    "worst_composition",
)
_MIN = ("worst_action_ratio", "worst_variety", "worst_psnr_twin")


def start_figures(e: dict) -> dict:
    """One long rollout's figures the goals read (one condition of one start's `long` entry)."""
    early, twin_early = (e.get("early") or [None])[0], (e.get("twin_early") or [None])[0]
    psnr = [x["psnr_twin"] for x in e.get("buckets") or [] if x.get("psnr_twin") is not None]
    out = {k: e.get(k) for k in (*_MEAN, *_MAX, *_MIN, "action_ratio", "composition_over_walk")}
    out.update(
        early_last=early["last"] if early else None,
        twin_first_over_floor=twin_early["fd_over_floor"] if twin_early else None,
        first_psnr_twin=psnr[0] if psnr else None,
        worst_psnr_twin=min(psnr) if psnr else None,
        starts=1,
    )
    return out


def pool_starts(figs: list[dict]) -> dict:
    """The figures of several starts' rollouts as the goals read them: the shares (visible, out of
    distribution, keys read) over all their frames, the worst-bucket figures the worst of any start's
    buckets. Of one start, its own figures."""

    def each(k):
        vals = [f.get(k) for f in figs]
        return None if any(v is None for v in vals) else vals

    out = {"starts": len(figs), "early_last": figs[0].get("early_last")}
    for keys, how in ((_MEAN, lambda v: sum(v) / len(v)), (_MAX, max), (_MIN, min)):
        for k in keys:
            out[k] = None if each(k) is None else how(each(k))
    acc, twin = out["action_accuracy"], out["twin_action_accuracy"]
    out["action_ratio"] = acc / twin if acc is not None and twin else None
    walks = [f["composition_over_walk"] for f in figs if f.get("composition_over_walk")]
    out["composition_over_walk"] = max(walks, key=lambda c: c["excess"]) if len(walks) == len(figs) else None
    return out


def long_figures(lg: dict | None) -> dict:
    """{condition: the figures its goals read}: over every start (eval's `over_starts`), or of the one
    start an older eval.json has."""
    if not lg:
        return {}
    if lg.get("over_starts"):
        return {c: lg["over_starts"][c] for c in ("scripted", "idle") if c in lg["over_starts"]}
    return {c: start_figures(lg[c]) for c in ("scripted", "idle") if lg.get(c)}


def verdicts(r: dict) -> list[dict]:
    """The goals of a world that holds (settings.GOALS), each with its figure and whether it is met.

    Where the real game could be replayed beside the model, the distribution goals are read against
    it: a long walk of the real game itself changes biome, so its own FD moves (x1.5 over 10 000
    frames) and a few per cent of its frames fall outside a finite reference (docs/eval/README.md)."""
    out = []

    def add(ok, text):
        if ok is not None:
            out.append({"pass": bool(ok), "text": text})

    sh, af, lg = r["short_horizon"], r["action_following"], r.get("long") or {}
    for cond, e in long_figures(lg).items():
        n = e.get("starts", 1)
        over = f", over {n} starts" if n > 1 else ""  # every figure reads all the starts' rollouts
        if e.get("visible") is not None:
            add(
                e["visible"] >= GOALS["visible"],
                f"{cond}: player visible in {e['visible']:.1%} of frames{over} (goal >= 99 %)",
            )
        twin_ood = e.get("twin_ood")
        limit = GOALS["ood"] if twin_ood is None else max(GOALS["ood"], twin_ood + GOALS["ood"])
        add(
            e["ood"] <= limit,
            f"{cond}: {e['ood']:.1%} of frames out of distribution{over} (goal <= {limit:.1%}"
            + (f": the real twin's {twin_ood:.1%} + 5 points)" if twin_ood is not None else ")"),
        )
        if cond == "scripted" and e.get("first_over_floor") is not None:
            add(
                e["first_over_floor"] <= GOALS["fd_first_over_floor"],
                f"scripted: frames 1-{e['early_last']} at {e['first_over_floor']:.1f}x the real floor's FD"
                f"{', the worst of ' + str(n) + ' starts' if n > 1 else ''} (goal <= 10x)",
            )
        if cond == "scripted" and e.get("worst_over_twin") is not None:
            add(
                e["worst_over_twin"] <= GOALS["fd_over_twin"],
                f"scripted: the worst bucket's FD {e['worst_over_twin']:.2f}x the real twin's in the same "
                f"bucket{over} (goal <= 1.5x)",
            )
        elif cond == "scripted" and e.get("drift") is not None:
            add(
                e["drift"] <= GOALS["fd_drift"],
                f"scripted: worst bucket's FD x{e['drift']:.2f} the first's{over} (goal <= 1.2x)",
            )
        if cond == "scripted" and e.get("action_ratio") is not None:
            worst = e.get("worst_action_ratio")
            low = e["action_ratio"] if worst is None else min(worst, e["action_ratio"])
            add(
                low >= GOALS["action_ratio"],
                f"scripted: the keys still followed: {e['action_ratio']:.2f} of the real twin's over all "
                f"{lg.get('frames')} frames"
                + (f", {worst:.2f} in the worst bucket" if worst is not None else "")
                + f"{over} (goal >= {GOALS['action_ratio']:.2f})",
            )
        c = e.get("composition_over_walk")
        if cond == "scripted" and c is not None:
            add(
                c["excess"] <= GOALS["composition_excess"],
                f"scripted: the world's make-up holds: the worst bucket's composition {c['model']:.3f} from "
                f"the real twin's, where a second real walk's is {c['walk']:.3f}{over} (goal <= the walk's + "
                f"{GOALS['composition_excess']:.2f})",
            )
        if cond == "idle" and e.get("worst_psnr_twin") is not None:
            floor = sh["psnr_at_1"] - GOALS["idle_psnr_drop"]
            add(
                e["worst_psnr_twin"] >= floor,
                f"idle: the world holds still: its worst bucket {e['worst_psnr_twin']:.1f} dB against the "
                f"real game{over} (goal >= {floor:.1f}: PSNR@1 less {GOALS['idle_psnr_drop']:.0f} dB)",
            )
    add(
        af["ratio"] >= GOALS["action_ratio"],
        f"action following {af['ratio']:.2f} of the real game's (goal >= 0.90)",
    )
    add(sh["psnr_at_1"] >= GOALS["psnr_at_1"], f"PSNR@1 {sh['psnr_at_1']:.1f} dB (goal >= 28)")
    add(sh["psnr_at_16"] >= GOALS["psnr_at_16"], f"PSNR@16 {sh['psnr_at_16']:.1f} dB (goal >= 21)")
    lo, hi = GOALS["sharpness"]
    if sh.get("sharpness_at_16") is not None:
        add(
            lo <= sh["sharpness_at_16"] <= hi,
            f"sharpness@16 {sh['sharpness_at_16']:.2f} of the real frames' (goal 0.8-1.2)",
        )
    return out
