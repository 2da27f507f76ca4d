// Compile tier: the byte encoder's promised combinations: both id
// conventions, BLT-1B and BLT's default n-gram/hash sets, both table layouts,
// fp32/fp16/bf16 storage, uint8 and int32 ids, forward and backward (fp32
// gradient tables; bf16 and fp16 ones for the deterministic path). This
// unit: BLT-1B and a plain-byte policy (instantiate_encoder_b.cu: the rest).
#include "instantiate_encoder.hpp"

template void all_dtypes_and_ids<enc::Blt1B>();
template void all_dtypes_and_ids<enc::HashEmbeddingPolicy<enc::ByteIds, enc::NGrams<2, 3, 4>, 2>>();

#if defined(TOKENLESS_BACKEND_EMU)
int main() { return 0; }
#endif
