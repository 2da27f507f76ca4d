// expect: multiple of 32, at most 1024
#define TOKENLESS_EMU
#include <tokenless/core/block.cuh>
int main() { return sizeof(tokenless::block::Reduce<float, 100>::TempStorage); }
