// blas::Gemm on the CPU executor: its host loop (tests/kernels/cublaslt.hpp).
#include "../kernels/cublaslt.hpp"
