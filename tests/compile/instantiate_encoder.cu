// Compile tier: the byte encoder's promised combinations: both id
// conventions, BLT-1B and BLT's default n-gram/hash sets, both table layouts,
// fp32/fp16/bf16 storage, uint8 and int32 ids, forward and backward (fp32
// gradient tables; bf16 and fp16 ones for the deterministic path).
#include <tokenless/tokenless.cuh>

namespace enc = tokenless::encoder;

template <class P, class T, class IdT>
void instantiate() {
  (void)&enc::HashEmbeddingForward<P, T, IdT>::run;
  (void)&enc::HashEmbeddingBackward<P, T, IdT>::run;
  (void)&enc::HashEmbeddingBackward<P, T, IdT, __nv_bfloat16>::run;
  (void)&enc::HashEmbeddingBackward<P, T, IdT, __half>::run;
}

template <class P>
void all_dtypes_and_ids() {
  instantiate<P, float, std::uint8_t>();
  instantiate<P, __half, std::uint8_t>();
  instantiate<P, __nv_bfloat16, std::uint8_t>();
  instantiate<P, float, std::int32_t>();
  instantiate<P, __half, std::int32_t>();
  instantiate<P, __nv_bfloat16, std::int32_t>();
}

template void all_dtypes_and_ids<enc::Blt1B>();
template void all_dtypes_and_ids<enc::BltDefault>();
template void all_dtypes_and_ids<enc::HashEmbeddingPolicy<enc::BltIds, enc::NGrams<3, 4, 5, 6, 7, 8>, 1, enc::FusedTable>>();
template void all_dtypes_and_ids<enc::HashEmbeddingPolicy<enc::ByteIds, enc::NGrams<2, 3, 4>, 2>>();

#if defined(TOKENLESS_BACKEND_EMU)
int main() { return 0; }
#endif
