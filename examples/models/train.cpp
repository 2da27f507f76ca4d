// tokenless-train: the host path (--device cpu, the default here) and the
// kernels on the CPU SIMT executor (--device emu); train.hpp has it all.
#include "train.hpp"
int main(int argc, char** argv) { return train_cli::main(argc, argv, nullptr); }
