// tokenless-patch: on a GPU, or on the CPU through the plain C++ path;
// --device emu hands over to tokenless-patch-cpu (the CPU SIMT executor).
#include "patch.hpp"
int main(int argc, char** argv) { return patch_cli::main(argc, argv, "tokenless-patch-cpu"); }
