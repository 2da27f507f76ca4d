// tokenless-patch-cpu: the plain C++ path, and the kernels on the CPU SIMT
// executor with --device emu.
#include "patch.hpp"
int main(int argc, char** argv) { return patch_cli::main(argc, argv, nullptr); }
