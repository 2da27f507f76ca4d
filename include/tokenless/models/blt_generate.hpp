#pragma once
// BLT generation on the host over a batch of prompts (tokenless-run's
// `--device cpu` for model_type "blt"): every prompt is its own stream,
// patched and cached on its own (models::BltStream), so a batch equals
// running each prompt alone; nothing is shared between streams but the
// weights and the decode steps' matrix products.
//
// Cached, the running streams decode together (BltStream::step_all: every
// matrix product over all their rows, each weight read once a step).
// A new byte is greedy (temperature 0) or drawn by heads::Sampling's rule
// (reference::sample: temperature, top-p, and the counter-based uniform of
// (seed, offset, row)), keyed by (seed, the byte's position in its
// sequence, the prompt's index in the batch): a stream's draws do not
// depend on the other streams, and the same seed gives the same bytes
// cached or not. A stream stops after EOS (unless ignore_eos) or
// max_new_tokens bytes.
//
//   BltGenerateOptions o;  o.max_new_tokens = 64;  o.sampling.temperature = 0.8f;
//   std::vector<BltOutput> out;
//   BltTimes t;
//   Status s = blt_generate(weights, prompts, o, out, &t);
#include <tokenless/core/status.hpp>
#include <tokenless/heads/policy.hpp>
#include <tokenless/models/blt_host.hpp>
#include <tokenless/reference/heads.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

namespace tokenless::models {

struct BltGenerateOptions {
  int max_new_tokens = 16;
  bool ignore_eos = false;
  heads::Sampling sampling{};  // temperature 0: greedy
  bool cache = true;           // false: every byte reruns the whole sequence (BLT's own generate)
  bool prompt_logits = false;  // keep each prompt's logits [n, 260]
  int speculative = 0;         // drafts a step (1..15; greedy, cached): BltStream::speculate
};

struct BltOutput {
  std::vector<std::int32_t> generated;   // the new ids (byte + 4; EOS included when it ended the stream)
  std::vector<std::int64_t> patches;     // the patch lengths of prompt + generated
  std::vector<float> prompt_logits;      // [prompt, 260], when asked
  std::int64_t global_steps = 0;         // global transformer runs over a patch (cached) or over a sequence's patches
  std::vector<unsigned long long> acceptance;  // speculative: steps that accepted a drafts, by a (0..speculative)
};

struct BltTimes {
  double prefill_s = 0;  // every prompt's prefill, with its first new byte's logits
  double decode_s = 0;   // the rest
};

inline Status check_blt_generate(const io::BltConfig& c, const std::vector<std::vector<std::int32_t>>& prompts,
                                 const BltGenerateOptions& o) {
  if (prompts.empty()) return Status::argument(StatusCode::invalid_argument, "prompts", "at least one prompt", "none");
  if (o.max_new_tokens < 0) {
    return Status::argument(StatusCode::invalid_argument, "max_new_tokens", "a count >= 0", "%d", o.max_new_tokens);
  }
  const auto& s = o.sampling;
  TL_RETURN_IF_ERROR(heads::check_sampling(s));
  if (o.speculative < 0 || o.speculative > 15) {
    return Status::argument(StatusCode::invalid_argument, "speculative", "0 to 15 drafts a step", "%d", o.speculative);
  }
  if (o.speculative > 0 && (s.temperature > 0 || !o.cache)) {
    return Status::argument(StatusCode::unsupported, "speculative",
                            "greedy decoding with the caches (self-speculative drafts verify greedy bytes)",
                            s.temperature > 0 ? "temperature %g" : "no cache", static_cast<double>(s.temperature));
  }
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const auto& p = prompts[b];
    if (p.empty()) return Status::error(StatusCode::invalid_argument, "prompt %zu is empty", b);
    for (std::int32_t id : p) {
      if (id < 0 || id >= c.vocab) {
        return Status::error(StatusCode::invalid_argument, "prompt %zu holds id %d, outside BLT's %d", b, id, c.vocab);
      }
    }
    const auto n = static_cast<std::int64_t>(p.size()) + o.max_new_tokens;
    for (const auto* st : {&c.patcher, &c.encoder, &c.decoder}) {
      if (st->max_positions > 0 && n > st->max_positions) {
        return Status::error(StatusCode::capacity_too_small,
                             "prompt %zu: %lld bytes of prompt and new bytes exceed the model's %lld positions", b,
                             static_cast<long long>(n), static_cast<long long>(st->max_positions));
      }
    }
  }
  return BltHost::check(c);
}

// The next id from a row of logits: greedy, or the seeded draw of the id at
// `position` of stream `row` (any family's host path; the NaN rule is
// reference::sample's: a row with NaN gives its first NaN's index).
inline std::int32_t draw_next(const float* logits, int vocab, const heads::Sampling& s, std::int64_t position,
                             std::int64_t row) {
  heads::Sampling k = s;
  k.offset = static_cast<std::uint64_t>(position);
  return reference::heads::sample(logits, vocab, k, row);
}

inline Status blt_generate(const io::BltWeights<float>& w, const std::vector<std::vector<std::int32_t>>& prompts,
                           const BltGenerateOptions& o, std::vector<BltOutput>& out, BltTimes* times = nullptr) {
  const io::BltConfig& c = w.config;
  TL_RETURN_IF_ERROR(check_blt_generate(c, prompts, o));
  const std::size_t B = prompts.size();
  const auto V = static_cast<std::size_t>(c.vocab);
  out.assign(B, BltOutput{});
  BltHost model(w);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  std::vector<std::vector<std::int32_t>> seq(prompts);
  std::vector<std::vector<float>> last(B);  // each stream's logits for its next byte
  std::vector<std::unique_ptr<BltStream>> streams(B);
  // Prefill: every prompt, and the logits its first new byte is chosen from.
  for (std::size_t b = 0; b < B; ++b) {
    std::vector<float> logits;
    if (o.cache) {
      streams[b] = std::make_unique<BltStream>(w);
      logits = streams[b]->append(prompts[b], /*last_only=*/!o.prompt_logits);
    } else {
      logits = model.forward(seq[b]);
      out[b].global_steps += static_cast<std::int64_t>(model.patch_lengths(seq[b]).size());
    }
    last[b].assign(logits.end() - static_cast<std::ptrdiff_t>(V), logits.end());
    if (o.prompt_logits) out[b].prompt_logits = std::move(logits);
  }
  const auto t1 = clock::now();
  // Self-speculative: a stream at a time, each step its byte and the drafts it accepts.
  std::vector<char> done(B, o.max_new_tokens == 0);
  for (std::size_t b = 0; b < B && o.speculative > 0; ++b) {
    auto& r = out[b];
    r.acceptance.assign(static_cast<std::size_t>(o.speculative) + 1, 0);
    std::vector<std::int32_t> made;
    std::int32_t next = draw_next(last[b].data(), c.vocab, o.sampling, 0, 0);  // greedy
    while (!done[b]) {
      const auto room = o.max_new_tokens - static_cast<int>(r.generated.size());
      const bool stop = !o.ignore_eos && next == c.eos;
      if (room == 1 || stop) {
        r.generated.push_back(next);
        break;
      }
      const int a = streams[b]->speculate(next, std::min(o.speculative, room - 1), made, last[b]);
      ++r.acceptance[static_cast<std::size_t>(a)];
      for (std::int32_t id : made) {
        r.generated.push_back(id);
        if (!o.ignore_eos && id == c.eos) done[b] = 1;
        if (done[b]) break;
      }
      if (static_cast<int>(r.generated.size()) >= o.max_new_tokens) done[b] = 1;
      next = draw_next(last[b].data(), c.vocab, o.sampling, 0, 0);
    }
    done[b] = 1;
    seq[b].insert(seq[b].end(), r.generated.begin(), r.generated.end());
  }
  // Decode: a byte a step for every stream still running; cached, the
  // running streams step together (BltStream::step_all: each matrix product
  // over all their rows).
  for (int i = 0; i < o.max_new_tokens; ++i) {
    std::vector<BltStream*> running;
    std::vector<std::int32_t> ids;
    std::vector<std::size_t> which;
    for (std::size_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const auto pos = static_cast<std::int64_t>(seq[b].size());
      const std::int32_t next = draw_next(last[b].data(), c.vocab, o.sampling, pos, static_cast<std::int64_t>(b));
      out[b].generated.push_back(next);
      seq[b].push_back(next);
      if ((!o.ignore_eos && next == c.eos) || i + 1 == o.max_new_tokens) {
        done[b] = 1;
        continue;
      }
      if (o.cache) {
        running.push_back(streams[b].get());
        ids.push_back(next);
        which.push_back(b);
      } else {
        const std::vector<float> logits = model.forward(seq[b]);
        out[b].global_steps += static_cast<std::int64_t>(model.patch_lengths(seq[b]).size());
        last[b].assign(logits.end() - static_cast<std::ptrdiff_t>(V), logits.end());
      }
    }
    if (!running.empty()) {
      std::vector<std::vector<float>> rows = BltStream::step_all(running, ids);
      for (std::size_t j = 0; j < which.size(); ++j) last[which[j]] = std::move(rows[j]);
    }
  }
  const auto t2 = clock::now();
  for (std::size_t b = 0; b < B; ++b) {
    out[b].patches = model.patch_lengths(seq[b]);
    if (o.cache) out[b].global_steps = streams[b]->global_steps();
    if (const auto P = c.global.max_positions; P > 0 && static_cast<std::int64_t>(out[b].patches.size()) > P) {
      return Status::error(StatusCode::capacity_too_small, "prompt %zu: %zu patches exceed the global model's %lld positions",
                           b, out[b].patches.size(), static_cast<long long>(P));
    }
  }
  if (times) {
    times->prefill_s = std::chrono::duration<double>(t1 - t0).count();
    times->decode_s = std::chrono::duration<double>(t2 - t1).count();
  }
  return Status::ok();
}

}  // namespace tokenless::models
