"""The core's first benchmark (issue 2): each optimizer on fp32 buffers of 2^20 and 2^24
elements, one thread, timed alternately with torch's fused (or foreach) implementation, with ms,
elements/s, GB/s and the bytes moved per element. A preset of `pyoptim bench`; options given
here are added to (and override) the preset's.

    python bench/bench_step.py [pyoptim bench options]
"""

import sys

from pyoptim.bench import main

PRESET = ["--optimizers", "all", "--dtypes", "fp32", "--sizes", "2^20,2^24", "--threads", "1",
          "--peers", "torch-fused,torch-foreach", "--out", "bench/results-step"]

if __name__ == "__main__":
    sys.exit(main(PRESET + sys.argv[1:], prog="python bench/bench_step.py"))
