"""python -m pyoptim.bench: the same as `pyoptim bench`."""

import sys

from . import main

sys.exit(main())
