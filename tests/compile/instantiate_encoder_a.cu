// Compile tier: the byte encoder's promised combinations: both id
// conventions, BLT-1B and BLT's default n-gram/hash sets, both table layouts,
// fp32/fp16/bf16 storage, uint8 and int32 ids (each storage type with both, not the
// cross product: instantiate_encoder.hpp), forward and backward (fp32
// gradient tables; bf16 and fp16 ones for the deterministic path). This
// unit: BLT-1B and a plain-byte policy (instantiate_encoder_b.cu: the rest).
#include "instantiate_encoder.hpp"

template void two_pairs<enc::Blt1B, float, std::uint8_t, __nv_bfloat16, std::int32_t>();
template void two_pairs<enc::HashEmbeddingPolicy<enc::ByteIds, enc::NGrams<2, 3, 4>, 2>, __half, std::uint8_t, float,
                        std::int32_t>();

#if defined(TOKENLESS_BACKEND_EMU)
int main() { return 0; }
#endif
