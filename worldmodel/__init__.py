"""worldmodel: a playable neural game world trained with Self Forcing.

Light to import: `WorldSession` (and PyTorch with it) loads on first use.
"""

from .actions import ActionSpace

__version__ = "0.1.0"
__all__ = ["ActionSpace", "WorldSession", "__version__"]


def __getattr__(name):
    if name == "WorldSession":
        from .runtime.session import WorldSession

        return WorldSession
    raise AttributeError(f"module 'worldmodel' has no attribute {name!r}")
