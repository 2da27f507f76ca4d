// The user-defined attention variant example on the CPU SIMT executor.
#include "custom_attention.hpp"
int main() { return custom_attention::main(); }
