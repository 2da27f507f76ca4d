// The smoke demo on a GPU.
#include "smoke.hpp"
int main(int argc, char** argv) { return smoke::main(argc, argv); }
