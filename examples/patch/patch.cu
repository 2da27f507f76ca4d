// tokenless-patch on a GPU; without one it hands over to tokenless-patch-cpu.
#include "patch.hpp"
int main(int argc, char** argv) { return patch_cli::main(argc, argv, "tokenless-patch-cpu"); }
