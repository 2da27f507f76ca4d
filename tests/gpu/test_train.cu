// The kernels' training step on a GPU (the emu tier runs it on the CPU: tests/emu/test_train.cpp).
#include "../kernels/train.hpp"
