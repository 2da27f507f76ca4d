// The byte encoder's kernels on the CPU executor (gpu tier: tests/gpu/test_encoder.cu):
// the cases outside the dtype sweep; the sweep is in test_encoder_{fp32,fp16,bf16}.cpp.
#define TLT_ENCODER_PART 0
#include "../kernels/encoder.hpp"
