// expect: BLT defines 11 hash primes
#include <tokenless/encoder/policy.hpp>
namespace enc = tokenless::encoder;
int main() { return enc::HashEmbeddingPolicy<enc::BltIds, enc::NGrams<3>, 12>::tables; }
