// OpenELM's layer-wise scaling built from decoder layers, on the CPU SIMT executor.
#include "openelm.hpp"
int main(int argc, char** argv) { return openelm_example::main(argc, argv); }
