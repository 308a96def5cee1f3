// The parts of the pyoptim._core module: each .cpp that binds functions defines one of these, and
// bindings.cpp's PYBIND11_MODULE calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace pyoptim {

void bind_step(pybind11::module_& m);     // bindings.cpp: the optimizer steps, threads, dtypes
void bind_stream(pybind11::module_& m);   // stream.cpp: the bandwidth roofline of `pyoptim bench`

}  // namespace pyoptim
