// The attention core on a GPU, every part (the emu tier runs them on the CPU:
// tests/emu/test_attention_{a,b,c}.cpp).
#include "../kernels/attention.hpp"
