"""The networks, the cache, the sampler and the files: `CausalDiT` (dit.py) and its attention
(attention.py), RoPE (rope.py) and KV ring (kv_cache.py); the frame autoencoder (autoencoder.py);
rectified flow (diffusion.py) and the few-step sampler (sampling.py); configs (config.py) and
safetensors + JSON checkpoints (checkpoint.py). Import from the modules: this package loads nothing.
"""
