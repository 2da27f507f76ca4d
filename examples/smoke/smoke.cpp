// The smoke demo on the CPU SIMT executor.
#include "smoke.hpp"
int main(int argc, char** argv) { return smoke::main(argc, argv); }
