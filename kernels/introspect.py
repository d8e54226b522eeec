"""Looking inside the fused kernel without a GPU (tests, and reading its resources): compile it for a
CUDA architecture with the compiler Triton ships, and count its registers, spills and tensor-core
instructions from the cubin. Nothing here runs at play time."""

from __future__ import annotations

import os

import triton

from .cached_attention import _cached_attention_fwd, _pow2, launch_config


def compile_for(
    arch: int = 90, dtype: str = "bf16", head_dim: int = 64, queries: int = 64, block_m=None, block_n=None,
    num_warps=None, num_stages=None, half: bool = False,
):  # fmt: skip
    """Compile the kernel for a CUDA architecture without a GPU (Triton ships the compiler) with the
    launch configuration the wrapper would pick for `queries` query tokens (or the one given) and
    return it: `.metadata.shared` is the shared memory one block asks for, `.asm` the PTX and the
    cubin (see `resource_usage`). Needs TRITON_INTERPRET unset when this module is imported (the
    interpreter replaces kernels)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = _cached_attention_fwd
    if not hasattr(kernel, "arg_names") or type(kernel).__name__ == "InterpretedFunction":
        raise RuntimeError("compile_for needs kernels imported with TRITON_INTERPRET unset")
    cfg = launch_config(queries, head_dim, dtype != "fp32")
    const = dict(
        HEAD_DIM=head_dim, DV=_pow2(head_dim), BLOCK_M=block_m or cfg["block_m"],
        BLOCK_N=block_n or cfg["block_n"], SPLIT=True, LOWP=dtype != "fp32", PREC="ieee", GIVEN=False,
        HALF=half,
    )  # fmt: skip
    pointer = {
        "Q",
        "K",
        "V",
        "KC",
        "VC",
        "O",
        "SLOT_FRAMES",
        "SLOT_REL",
        "SLOT_SEEN",
        "COS",
        "SIN",
        "M_OUT",
        "L_OUT",
    }
    sig = {}
    for name in kernel.arg_names:
        if name in const:
            sig[name] = "constexpr"
        elif name in ("Q", "K", "V", "KC", "VC", "O"):
            sig[name] = "*" + dtype
        elif name in ("SLOT_FRAMES", "SLOT_REL"):
            sig[name] = "*i64"
        elif name == "SLOT_SEEN":
            sig[name] = "*i8"
        elif name in ("COS", "SIN", "M_OUT", "L_OUT"):
            sig[name] = "*fp32"
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    # what a launch specialises on: pointers from torch are 16-byte aligned, and the strides of
    # contiguous tensors with head dim 32/64/128 are multiples of 16 (without this the loads cannot
    # be vectorised and nothing is pipelined)
    aligned = [["tt.divisibility", 16]]
    attrs = {(i,): aligned for i, n in enumerate(kernel.arg_names) if n in pointer or n.startswith("stride_")}
    attrs.pop((kernel.arg_names.index("stride_os"),))  # 0 when there is one split: not specialised
    options = dict(num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"])
    source = ASTSource(kernel, sig, const, attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def resource_usage(compiled) -> dict:
    """Registers per thread, spill traffic and tensor-core instructions of a `compile_for` result, read
    from its cubin with the cuobjdump that Triton ships: spills (local-memory loads and stores in
    the inner loop) are what turns a flash-attention kernel from tensor-core bound to memory bound."""
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        res = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))
    return dict(
        registers=int(usage.get("REG", 0)),
        stack_bytes=int(usage.get("STACK", 0)),
        spill_loads=len(re.findall(r"\bLDL\b", sass)),
        spill_stores=len(re.findall(r"\bSTL\b", sass)),
        wgmma=len(re.findall(r"\bHGMMA\b", sass)),
        mma=len(re.findall(r"\bHMMA\b", sass)),
        shared_bytes=compiled.metadata.shared,
        num_warps=compiled.metadata.num_warps,
    )
