// tokenless-run: the library's kernels on the GPU (--device gpu, the default
// where there is one) or the plain C++ decoder (--device cpu); --device emu
// hands over to tokenless-run-cpu (the CPU SIMT executor).
#include "run.hpp"
int main(int argc, char** argv) { return run_cli::main(argc, argv, "tokenless-run-cpu"); }
