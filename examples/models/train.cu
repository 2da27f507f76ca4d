// tokenless-train-gpu: the kernels on the GPU (--device gpu, the default where
// there is one) or the host path (--device cpu); --device emu hands over to
// tokenless-train beside it (the CPU SIMT executor).
#include "train.hpp"
int main(int argc, char** argv) { return train_cli::main(argc, argv, "tokenless-train"); }
