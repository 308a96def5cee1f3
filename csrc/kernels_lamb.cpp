// Instantiates the Lamb step for every supported dtype combination and flag mask.
#include "kernels.h"

namespace pyoptim {
PYOPTIM_DEFINE_STEP(Lamb)
}  // namespace pyoptim
