// The byte encoder's fp16 sweep on a GPU (a unit of its own: the encoder's cases
// are the largest compile of the tiers).
#define TLT_ENCODER_PART 2
#include "../kernels/encoder.hpp"
