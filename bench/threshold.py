"""Where a second thread starts to pay (csrc/threads.h, kMinElementsPerThread): Adam and SGD fp32
on 1 and 2 threads over sizes around the threshold, against the roofline. A preset of
`pyoptim bench`; options given here are added to (and override) the preset's.

    python bench/threshold.py [pyoptim bench options]
"""

import sys

from pyoptim.bench import main

PRESET = ["--optimizers", "adam,sgd", "--dtypes", "fp32", "--threads", "1,2", "--peers", "none",
          "--sizes", "2^13,2^14,2^15,2^16,2^17,2^18,2^19,2^20", "--out", "bench/results-threshold"]

if __name__ == "__main__":
    sys.exit(main(PRESET + sys.argv[1:], prog="python bench/threshold.py"))
