// The attention core on the CPU executor, part 0 of 5 (tests/kernels/attention.hpp;
// gpu tier: tests/gpu/test_attention.cu).
#define TLT_ATTENTION_PART 0
#include "../kernels/attention.hpp"
