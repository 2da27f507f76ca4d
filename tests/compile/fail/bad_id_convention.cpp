// expect: constraints not satisfied|IdConvention
#include <tokenless/encoder/policy.hpp>
namespace enc = tokenless::encoder;
struct WrongIds {  // 300 ids cannot be bytes plus an offset of 4
  static constexpr int kOffset = 4;
  static constexpr int kVocab = 300;
};
int main() { return enc::HashEmbeddingPolicy<WrongIds, enc::NGrams<3>, 1>::tables; }
