"""`python -m worldmodel.train STAGE ...` (what torchrun launches on each GPU)."""

import sys

from .cli import main

sys.exit(main())
