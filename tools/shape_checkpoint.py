"""A random-weight world of a given student shape around a trained autoencoder, with the shipped
start frames: what a student of that shape costs in `worldmodel play` or `web` (a frame's cost does
not depend on the weights), before training one (docs/benchmarks/README.md, "A student narrower than
its teacher").

    python tools/shape_checkpoint.py --shape dim=128,heads=2 --out /tmp/narrow.safetensors
    worldmodel play --checkpoint /tmp/narrow.safetensors --fps 60
"""

from __future__ import annotations

import argparse

import torch

from worldmodel.model.checkpoint import (
    WorldModel,
    load_autoencoder,
    load_checkpoint,
    resolve,
    save_checkpoint,
)
from worldmodel.model.config import STUDENT_FIELDS, ModelConfig, parse_shape, reshaped


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="", help="changes to the preset's transformer, e.g. dim=128,heads=2")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--ae", default="assets/overworld/autoencoder.safetensors", help="a trained autoencoder")
    p.add_argument("--start-from", default="overworld", help="the checkpoint whose start frames to keep")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    ae, _, _ = load_autoencoder(args.ae)
    cfg = reshaped(
        ModelConfig.from_name(args.preset, ae=ae.cfg), parse_shape(args.shape, "--shape", STUDENT_FIELDS)
    )
    torch.manual_seed(0)
    model = WorldModel(cfg)
    model.ae.load_state_dict(ae.state_dict())
    start = load_checkpoint(resolve(args.start_from))[1]
    print(save_checkpoint(args.out, model, start, extra={"random_weights": True}))


if __name__ == "__main__":
    main()
