// The byte encoder's kernels on a GPU (the emu tier runs them on the CPU:
// tests/emu/test_encoder.cpp): the cases outside the dtype sweep; the sweep
// is in test_encoder_{fp32,fp16,bf16}.cu.
#define TLT_ENCODER_PART 0
#include "../kernels/encoder.hpp"
