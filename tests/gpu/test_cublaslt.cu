// blas::Gemm on a GPU: cuBLASLt (tests/kernels/cublaslt.hpp).
#include "../kernels/cublaslt.hpp"
