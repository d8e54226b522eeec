"""Playing a model: `WorldSession` (session.py), the backends that make its frames (backends/), the
Gymnasium env drawn by a model (dream.py) and the CPU threads' wait policy chosen before PyTorch
loads (threads.py). Light to import: this package loads nothing.
"""
