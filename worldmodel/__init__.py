"""worldmodel: a playable neural game world trained with Self Forcing.

Light to import: games, data and models load on first use of their modules.
"""

from .actions import ActionSpace

__version__ = "0.1.0"
__all__ = ["ActionSpace", "__version__"]
