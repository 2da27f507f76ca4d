#pragma once
// REQUIRE_OK for the host tier's units that do not include the device
// tiers' support header.
#include <doctest/doctest.h>
#include <tokenless/core/status.hpp>

#define REQUIRE_OK(expr)                   \
  do {                                     \
    const ::tokenless::Status s_ = (expr); \
    INFO("status: " << s_.message());      \
    REQUIRE(s_.is_ok());                   \
  } while (0)
