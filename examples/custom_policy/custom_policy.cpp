// The user-defined patch policy example on the CPU SIMT executor.
#include "custom_policy.hpp"
int main() { return custom_policy::main(); }
