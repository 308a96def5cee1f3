// The parts of the pyoptim._core module: each .cpp that binds functions defines one of these, and
// bindings.cpp's PYBIND11_MODULE calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace pyoptim {

void bind_step(pybind11::module_& m);        // bindings.cpp: the optimizer steps, threads, dtypes
void bind_plan(pybind11::module_& m);        // plan.cpp: Plan, a step over an optimizer's arrays
void bind_reductions(pybind11::module_& m);  // reductions.cpp: deterministic sums of squares
void bind_stream(pybind11::module_& m);      // stream.cpp: the bandwidth roofline of `pyoptim bench`

}  // namespace pyoptim
