"""Fused GPU kernels (Triton), each standing on a pure-PyTorch reference in `kernels/reference.py`.

The cached-attention kernel and its reference arrive with the model core; this package is
installed now so that `worldmodel` can depend on it from the start.
"""
