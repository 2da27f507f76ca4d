#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <tokenless/emu/emu.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  const auto o = tokenless::emu::options();
  std::printf("tokenless emu tier: %s mode, %s order, seed %llu, sm_%d\n",
              o.mode == tokenless::emu::Mode::threads ? "thread" : "fiber",
              o.order == tokenless::emu::Order::forward ? "forward"
              : o.order == tokenless::emu::Order::reverse ? "reverse" : "random",
              static_cast<unsigned long long>(o.seed), o.compute_capability);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
