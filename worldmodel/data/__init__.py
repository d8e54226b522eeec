"""Recording, storing, checking and loading action-labelled gameplay (see docs/dataset.md).

The PyTorch dataset lives in `worldmodel.data.dataset` (it imports torch); everything else
here needs only NumPy, so recorder worker processes start fast.
"""

from .format import ALIGNMENT, DatasetError, Episode, Manifest, check_dataset, open_episode

__all__ = ["ALIGNMENT", "DatasetError", "Episode", "Manifest", "check_dataset", "open_episode"]
