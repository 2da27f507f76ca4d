// The attention core on the CPU executor, part 3 of 5: decoding from a KV
// cache (tests/kernels/attention.hpp; gpu tier: tests/gpu/test_attention.cu).
#define TLT_ATTENTION_PART 3
#include "../kernels/attention.hpp"
