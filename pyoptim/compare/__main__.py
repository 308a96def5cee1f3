"""python -m pyoptim.compare: the same as `pyoptim compare`."""

import sys

from . import main

sys.exit(main())
