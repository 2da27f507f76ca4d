// The user-defined patch policy example on a GPU.
#include "custom_policy.hpp"
int main() { return custom_policy::main(); }
