"""The `export` command: a model's play-time graphs for other runtimes (onnx: backends/onnx.py)."""

from __future__ import annotations

import json
from pathlib import Path


def add_commands(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="export a model's play-time graphs (onnx: the cached passes and the decoder)",
        description="Export for other runtimes. onnx: denoise.onnx and cache.onnx (the KV ring as an "
        "explicit input, the chunk's new K/V as outputs; fixed shapes) and decode.onnx, checked by "
        "`worldmodel profile --backend onnx` and tests/test_backends.py.",
    )
    ex.add_argument("format", choices=["onnx"])
    ex.add_argument("--checkpoint", required=True, help="a checkpoint (path or shipped model name)")
    ex.add_argument("--out", type=Path, required=True, help="output folder (replaced if it holds an export)")
    ex.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from ..model.checkpoint import load_checkpoint, resolve
    from .backends import onnx as onnx_backend

    if why := onnx_backend.available():
        raise ValueError(f"export onnx: {why}")
    model, _, _ = load_checkpoint(args.checkpoint)
    out = onnx_backend.export(model, args.out, source=str(resolve(args.checkpoint)))
    meta = json.loads((out / "onnx.json").read_text())
    print(f"wrote {out}/denoise.onnx, cache.onnx, decode.onnx ({meta['export_s']:.1f} s)")
    print(
        "play it with ONNX Runtime: "
        f"WorldSession.from_checkpoint({args.checkpoint!r}, backend='onnx', onnx_dir={str(out)!r})"
    )
    return 0
