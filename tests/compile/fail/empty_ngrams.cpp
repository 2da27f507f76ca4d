// expect: the n-gram set must not be empty
#include <tokenless/encoder/policy.hpp>
int main() { return tokenless::encoder::NGrams<>::size; }
