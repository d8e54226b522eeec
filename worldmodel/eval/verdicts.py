"""An eval's verdicts: each goal of a world that holds (settings.GOALS) with its figure from eval.json
and whether it is met."""

from __future__ import annotations

from .settings import GOALS


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
    for cond in ("scripted", "idle"):
        e = lg.get(cond)
        if not e:
            continue
        if e.get("visible") is not None:
            add(
                e["visible"] >= GOALS["visible"],
                f"{cond}: player visible in {e['visible']:.1%} of frames (goal >= 99 %)",
            )
        twin_ood = e.get("twin_ood")
        limit = GOALS["ood"] if twin_ood is None else max(GOALS["ood"], twin_ood + GOALS["ood"])
        add(
            e["ood"] <= limit,
            f"{cond}: {e['ood']:.1%} of frames out of distribution (goal <= {limit:.1%}"
            + (f": the real twin's {twin_ood:.1%} + 5 points)" if twin_ood is not None else ")"),
        )
        if cond == "scripted" and e.get("first_over_floor") is not None:
            add(
                e["first_over_floor"] <= GOALS["fd_first_over_floor"],
                f"scripted: frames 1-{e['early'][0]['last']} at {e['first_over_floor']:.1f}x the real "
                "floor's FD (goal <= 10x)",
            )
        if cond == "scripted" and e.get("worst_over_twin") is not None:
            add(
                e["worst_over_twin"] <= GOALS["fd_over_twin"],
                f"scripted: the worst bucket's FD {e['worst_over_twin']:.2f}x the real twin's in the same "
                "bucket (goal <= 1.5x)",
            )
        elif cond == "scripted" and e.get("drift") is not None:
            add(
                e["drift"] <= GOALS["fd_drift"],
                f"scripted: worst bucket's FD x{e['drift']:.2f} the first's (goal <= 1.2x)",
            )
        if cond == "scripted" and e.get("action_ratio") is not None:
            worst = e.get("worst_action_ratio")
            low = e["action_ratio"] if worst is None else min(worst, e["action_ratio"])
            add(
                low >= GOALS["action_ratio"],
                f"scripted: the keys still followed: {e['action_ratio']:.2f} of the real twin's over all "
                f"{lg.get('frames')} frames"
                + (f", {worst:.2f} in the worst bucket" if worst is not None else "")
                + f" (goal >= {GOALS['action_ratio']:.2f})",
            )
        c = e.get("composition_over_walk")
        if cond == "scripted" and c is not None:
            add(
                c["excess"] <= GOALS["composition_excess"],
                f"scripted: the world's make-up holds: the worst bucket's composition {c['model']:.3f} from "
                f"the real twin's, where a second real walk's is {c['walk']:.3f} (goal <= the walk's + "
                f"{GOALS['composition_excess']:.2f})",
            )
        b = e.get("buckets") or []
        if cond == "idle" and b and b[0].get("psnr_twin") is not None:
            worst = min(x["psnr_twin"] for x in b)
            floor = sh["psnr_at_1"] - GOALS["idle_psnr_drop"]
            add(
                worst >= floor,
                f"idle: the world holds still: its worst bucket {worst:.1f} dB against the real game "
                f"(goal >= {floor:.1f}: PSNR@1 less {GOALS['idle_psnr_drop']:.0f} dB)",
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
