// The byte encoder's kernels on a GPU (the emu tier runs them on the CPU: tests/emu/test_encoder.cpp).
#include "../kernels/encoder.hpp"
