// The user-defined attention variant example on a GPU.
#include "custom_attention.hpp"
int main() { return custom_attention::main(); }
