// tokenless-patch on the CPU SIMT executor.
#include "patch.hpp"
int main(int argc, char** argv) { return patch_cli::main(argc, argv, nullptr); }
