// CoCoMix's sparse concepts on a GPU (the emu tier runs them on the CPU: tests/emu/test_concepts.cpp).
#include "../kernels/concepts.hpp"
