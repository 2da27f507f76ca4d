// tokenless-run-cpu: the plain C++ decoder (--device cpu) and the library's
// kernels on the CPU SIMT executor (--device emu).
#include "run.hpp"
int main(int argc, char** argv) { return run_cli::main(argc, argv, nullptr); }
