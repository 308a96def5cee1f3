// Instantiates the Sgd step for every supported dtype combination and flag mask.
#include "kernels.h"

namespace pyoptim {
PYOPTIM_DEFINE_STEP(Sgd)
}  // namespace pyoptim
