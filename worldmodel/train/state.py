"""A training stage's state on disk: weights, EMA, optimizer state, step and RNG state, all as
safetensors + JSON (no pickles), written atomically; found and loaded again on resume."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict, prefix: str) -> dict:
    state: dict = defaultdict(dict)
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, k = key[len(prefix) + 1 :].split(".", 1)
            state[int(idx)][k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state[int(idx)][k] = v
    return {"state": dict(state), "param_groups": meta["param_groups"]}


def save_state(path: Path, nets: dict, emas: dict, opts: dict, step: int, extra: dict) -> None:
    """Write checkpoint directory `path` atomically: build path.tmp, then swap it in."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {}
    for name, net in nets.items():
        weights.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    for name, net in emas.items():
        weights.update(
            {f"ema.{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        )
    save_file(weights, str(tmp / "weights.safetensors"))
    opt_tensors, opt_meta = {}, {}
    for name, opt in opts.items():
        t, m = _flatten_optimizer(opt, name)
        opt_tensors.update(t)
        opt_meta[name] = m
    opt_tensors["rng.torch"] = torch.get_rng_state()
    save_file(opt_tensors, str(tmp / "optim.safetensors"))
    np_state = np.random.get_state()
    meta = {
        "step": step,
        "optimizers": opt_meta,
        "rng": {
            "python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        },
        **extra,
    }
    (tmp / "state.json").write_text(json.dumps(meta))
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_state(path: Path) -> Path | None:
    """The checkpoint directory to resume from (a swap cut short leaves it at .old)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".old")):
        if (p / "state.json").is_file():
            return p
    return None


def load_state(path: Path, nets: dict, emas: dict, opts: dict) -> dict:
    try:
        weights = load_file(str(path / "weights.safetensors"))
        opt_tensors = load_file(str(path / "optim.safetensors"))
        meta = json.loads((path / "state.json").read_text())
    except Exception as e:  # a damaged checkpoint: say which, never guess
        raise ValueError(f"{path}: damaged training checkpoint ({type(e).__name__}: {e})") from None
    for group, mods in (("", nets), ("ema.", emas)):
        for name, net in mods.items():
            pre = f"{group}{name}."
            sd = {k[len(pre) :]: v for k, v in weights.items() if k.startswith(pre)}
            net.load_state_dict(sd)
    for name, opt in opts.items():
        opt.load_state_dict(_unflatten_optimizer(opt_tensors, meta["optimizers"][name], name))
    torch.set_rng_state(opt_tensors["rng.torch"])
    import ast

    random.setstate(ast.literal_eval(meta["rng"]["python"]))
    n = meta["rng"]["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    return meta
