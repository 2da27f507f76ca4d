// expect: constraints not satisfied|StorageFloat
#define TOKENLESS_EMU
#include <tokenless/core/row_reduce/row_reduce.cuh>
namespace rr = tokenless::row_reduce;
int main() { return static_cast<int>(rr::Forward<rr::SumPolicy, double>::workspace_size({})); }
