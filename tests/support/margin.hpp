#pragma once
// Top-1 minus top-2 of a row of logits: how far a greedy choice is from
// flipping (the model tests compare a choice only where it exceeds the error).
#include <cmath>

namespace tlt {

inline double top2_margin(const float* row, int n) {
  float a = -INFINITY, b = -INFINITY;
  for (int i = 0; i < n; ++i) {
    if (row[i] > a) {
      b = a;
      a = row[i];
    } else if (row[i] > b) {
      b = row[i];
    }
  }
  return static_cast<double>(a) - b;
}

}  // namespace tlt
