"""How a backend runs, as one value: `BackendOptions`, passed to `WorldSession(..., options=)`, set by
the command line of `play`, `web` and `profile` (`add_arguments` / `from_args`), and recorded by
`profile` (`asdict`). None of it changes a frame; each choice trades time to first frame, launches
or threads (what each was measured to do: worldmodel/runtime/backends/compiled.py, onnx.py). Imports no
PyTorch, so the command line stays fast."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

COMPILED_ATTENTION = ("auto", "kernel", "sdpa")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class BackendOptions:
    # compiled: attention by the fused Triton kernel reading the ring in place, or by SDPA over the
    # ring rotated once per chunk; auto: the kernel on a CUDA GPU for frames of <= 128 tokens
    compiled_attention: str = "auto"
    # compiled on a GPU: torch.compile the passes before the CUDA graph captures them (False: capture
    # the eager ops; the compile's tens of seconds spared)
    inductor: bool = True
    # compiled: a chunk's adaLN modulations made at once and the rotary turns as slicing (fewer
    # launches, the same numbers)
    rewrites: bool = True
    # compiled: each chunk's cache pass run with the next chunk's first denoising pass (off: it did not
    # pay on 2 CPU cores, unmeasured on a GPU)
    merge: bool = False
    # compiled: torch.compile's mode (max-autotune-no-cudagraphs: GEMM autotuning at the first frame)
    compile_mode: str = "default"
    # onnx: ONNX Runtime's intra-op threads (None: one for narrow models, PyTorch's otherwise)
    ort_threads: int | None = None

    def __post_init__(self):
        for name, allowed in (("compiled_attention", COMPILED_ATTENTION), ("compile_mode", COMPILE_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"backend option {name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}"
                )
        for name in ("inductor", "rewrites", "merge"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"backend option {name}={getattr(self, name)!r}: expected true or false")
        if self.ort_threads is not None and (not isinstance(self.ort_threads, int) or self.ort_threads < 1):
            raise ValueError(f"backend option ort_threads={self.ort_threads!r}: expected a positive integer")

    def asdict(self) -> dict:
        return asdict(self)

    def changed(self) -> dict:
        """The options that differ from the defaults (what a report names)."""
        default = BackendOptions()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The backend options as command-line flags (play, web, profile)."""
    g = p.add_argument_group("backend options (none changes a frame; see docs/architecture.md)")
    g.add_argument(
        "--compiled-attention",
        choices=COMPILED_ATTENTION,
        default="auto",
        help="compiled: the fused kernel or SDPA for attention (default: auto, by frame size and device)",
    )
    g.add_argument(
        "--no-inductor",
        dest="inductor",
        action="store_false",
        help="compiled on a GPU: capture the eager ops without torch.compile",
    )
    g.add_argument(
        "--no-rewrites",
        dest="rewrites",
        action="store_false",
        help="compiled: leave out the fewer-launch rewrites of the pass",
    )
    g.add_argument(
        "--merge",
        action="store_true",
        help="compiled: run each chunk's cache pass with the next chunk's first pass",
    )
    g.add_argument(
        "--compile-mode", choices=COMPILE_MODES, default="default", help="compiled: torch.compile's mode"
    )
    g.add_argument(
        "--ort-threads",
        type=int,
        default=None,
        help="onnx: ONNX Runtime's threads (default: 1 for narrow models, else PyTorch's)",
    )


def from_args(args: argparse.Namespace) -> BackendOptions:
    return BackendOptions(
        compiled_attention=args.compiled_attention,
        inductor=args.inductor,
        rewrites=args.rewrites,
        merge=args.merge,
        compile_mode=args.compile_mode,
        ort_threads=args.ort_threads,
    )
