// expect: top-k patching selects over the whole sequence, so it cannot stream
#include <tokenless/patcher/policy.hpp>

int main() {
  tokenless::patcher::StreamState s;
  return tokenless::patcher::stream_push(tokenless::patcher::EntropyTopK{}, s, 1.0f, 100) ? 0 : 1;
}
