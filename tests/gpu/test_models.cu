// The assembled decoder on a GPU (the emu tier runs it on the CPU: tests/emu/test_models.cpp).
#include "../kernels/models.hpp"
