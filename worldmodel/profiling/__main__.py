"""`python -m worldmodel.profiling stages|memory` (stages.py)."""

import sys

from .stages import main

sys.exit(main())
