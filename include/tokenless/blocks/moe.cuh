#pragma once
// Mixtral-style mixture of experts (transformers' MixtralSparseMoeBlock),
// forward, and the grouped GEMM it runs on. fp32/fp16/bf16 storage, fp32
// accumulation, no atomics (the same bits on every run), no host sync: the
// experts' row counts never leave the device.
//
//   GroupedGemm<T>        C[rows of g] = A[rows of g] · B[g]ᵀ, the groups
//                         given by device-side offsets (a VarlenBatch)
//   Moe<A, T>             the sparse MoE block: router logits = x · W_gᵀ
//                         (rounded to T, as transformers' bf16 linear is);
//                         p = softmax in fp32; the top k, renormalised
//                         (Mixtral: k = 2); dropless dispatch by expert (a
//                         stable sort); per expert [gate | up] = x · W_guᵀ,
//                         act(gate) · up, · W_downᵀ (grouped GEMMs); combine
//                         out[t] = Σ_s w[t, s] · y[t, s] in fp32, rounded once
//   MoeBalanceLoss<T>     transformers' load_balancing_loss_func for
//                         Mixtral: E · Σ_e (tokens routed to e / rows) ·
//                         (mean router probability of e), over the router
//                         logits of every layer stacked [layers · tokens, E]
//
// Weights in the layout transformers 5 writes: gate_up [E, 2F, d] (the gate's
// F rows first), down [E, d, F], router [E, d]. The Hub's per-expert
// w1 (gate), w3 (up), w2 (down) are packed into it when a model is loaded
// (examples/models).
#include <tokenless/blocks/activation.cuh>
#include <tokenless/blocks/moe_kernel.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/device_algorithms.cuh>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tokenless::blocks {

namespace detail {

// A 16-byte-aligned pointer whose rows `ld` elements apart stay aligned.
template <class T>
inline Status check_gemm_operand(const char* name, const void* p, std::int64_t ld, std::int64_t row_len) {
  TL_RETURN_IF_ERROR(check::not_null(name, p));
  if (ld < row_len) {
    return Status::argument(StatusCode::shape_mismatch, name, "a row stride >= the row's length", "%lld (length %lld)",
                            static_cast<long long>(ld), static_cast<long long>(row_len));
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 || ld % 8 != 0) {
      return Status::argument(StatusCode::misaligned, name, "16-byte aligned rows (the tensor-core path copies 16 bytes)",
                              "%p, row stride %lld", p, static_cast<long long>(ld));
    }
  }
  return Status::ok();
}

// C = A · B[g]ᵀ (B [n, k], kBKN false) or A · B[g] (B [k, n], kBKN true).
template <class T, bool kBKN = false>
inline Status launch_grouped_gemm(const GemmParams<T>& g, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(attention::detail::tile_count(g.groups, kGemmTile)),
                  static_cast<unsigned>((g.n + kGemmTile - 1) / kGemmTile));
  if constexpr (std::is_same_v<T, float>) return launch<GroupedGemmF32Kernel<kBKN>>({g}, grid, stream);
  else return launch<GroupedGemmKernel<T, kBKN>>({g}, grid, stream);
}
// W[g] (+)= Y[rows of g]ᵀ · X[rows of g] in fp32.
template <class T>
inline Status launch_grouped_wgrad(WgradParams<T> w, cudaStream_t stream) {
  w.tiles_n = (w.n + kGemmTile - 1) / kGemmTile;
  const dim3 grid(static_cast<unsigned>(w.groups.num_seqs * w.tiles_n),
                  static_cast<unsigned>((w.k + kGemmTile - 1) / kGemmTile));
  if constexpr (std::is_same_v<T, float>) return launch<GroupedWgradF32Kernel>({w}, grid, stream);
  else return launch<GroupedWgradKernel<T>>({w}, grid, stream);
}

}  // namespace detail

template <StorageFloat T>
struct GroupedGemm {
  static constexpr const char* kName = "blocks::GroupedGemm";
  struct Arguments {
    const T* a = nullptr;  // [groups.total, k]
    const T* b = nullptr;  // [groups.num_seqs][n, k]: each group's weight, nn.Linear's layout
    T* c = nullptr;        // [groups.total, n]
    VarlenBatch groups;    // group g owns rows [offsets[g], offsets[g + 1])
    int n = 0, k = 0;
    std::int64_t lda = 0, ldb = 0, ldc = 0;  // 0: packed
    std::int64_t b_stride = 0;               // elements between groups' weights (0: n · ldb)
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::batch("groups", a.groups));
    TL_RETURN_IF_ERROR(check::positive("n", a.n));
    TL_RETURN_IF_ERROR(check::positive("k", a.k));
    if (!std::is_same_v<T, float> && a.k % 8 != 0) {
      return Status::argument(StatusCode::unsupported, "k", "a multiple of 8 (16-byte rows)", "%d", a.k);
    }
    TL_RETURN_IF_ERROR(detail::check_gemm_operand<T>("a", a.a, a.lda ? a.lda : a.k, a.k));
    TL_RETURN_IF_ERROR(detail::check_gemm_operand<T>("b", a.b, a.ldb ? a.ldb : a.k, a.k));
    TL_RETURN_IF_ERROR(check::not_null("c", a.c));
    if (a.ldc && a.ldc < a.n) {
      return Status::argument(StatusCode::shape_mismatch, "ldc", "at least n", "%lld", static_cast<long long>(a.ldc));
    }
    return check::fits_int32("tiles", attention::detail::tile_count(a.groups, detail::kGemmTile));
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<GroupedGemm>(a, ws));
    TL_RETURN_IF_ERROR(begin_checks(status_of(ws), a.groups, stream));
    const std::int64_t ldb = a.ldb ? a.ldb : a.k;
    // Offsets that are not a prefix sum stop the GEMM (the kernel layer's
    // guard): nothing is written, and read_status() names the entry.
    return detail::launch_grouped_gemm<T>({a.a, a.lda ? a.lda : a.k, a.b, ldb, a.b_stride ? a.b_stride : a.n * ldb, a.c,
                                           a.ldc ? a.ldc : a.n, a.groups, a.n, a.k, status_of(ws)},
                                          stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return read_batch_status(kName, a.groups, ws, stream);
  }
};

template <ActivationPolicy A, StorageFloat T>
struct Moe {
  static constexpr const char* kName = "blocks::Moe";
  static constexpr int kMaxExperts = detail::kMoeMaxExperts;
  static constexpr int kMaxTopK = detail::kMoeMaxTopK;
  struct Arguments {
    const T* x = nullptr;        // [tokens, d]
    std::int64_t tokens = 0;
    int d = 0;
    const T* router = nullptr;   // [experts, d]: mlp.gate.weight
    const T* gate_up = nullptr;  // [experts, 2 ffn, d]: mlp.experts.gate_up_proj (gate rows first)
    const T* down = nullptr;     // [experts, d, ffn]: mlp.experts.down_proj
    int experts = 0, top_k = 0, ffn = 0;  // Mixtral: 8, 2, intermediate_size
    bool renormalize = true;     // the top k's weights sum to 1 (Mixtral's norm_topk_prob)
    std::int64_t x_stride = 0, out_stride = 0;  // 0: packed
    T* out = nullptr;            // [tokens, d] (not x)
    T* router_logits = nullptr;  // [tokens, experts], optional: for MoeBalanceLoss
  };
  static int key_bits(int experts) {
    int b = 1;
    while ((1 << b) < experts) ++b;
    return b;
  }
  struct Layout {
    std::size_t logits, expert, weight, keys_in, keys_out, slots_in, slots_out, sort, offsets, position, x_perm, h, act,
        y, bytes, sort_bytes;
  };
  static Layout layout(const Arguments& a) {
    const std::int64_t n = a.tokens * a.top_k;
    std::size_t sort_bytes = 0;
    (void)device::sort_pairs<std::uint32_t, std::int32_t>(nullptr, sort_bytes, nullptr, nullptr, nullptr, nullptr, n, 0,
                                                          key_bits(a.experts));
    WorkspaceLayout w;
    Layout l{};
    l.logits = w.add_array<T>(a.tokens * a.experts);
    l.expert = w.add_array<std::int32_t>(n);
    l.weight = w.add_array<float>(n);
    l.keys_in = w.add_array<std::uint32_t>(n);
    l.keys_out = w.add_array<std::uint32_t>(n);
    l.slots_in = w.add_array<std::int32_t>(n);
    l.slots_out = w.add_array<std::int32_t>(n);
    l.sort = w.add(sort_bytes);
    l.offsets = w.add_array<std::int32_t>(a.experts + 1);
    l.position = w.add_array<std::int32_t>(n);
    l.x_perm = w.add_array<T>(n * a.d);
    l.h = w.add_array<T>(n * 2 * std::int64_t{a.ffn});
    l.act = w.add_array<T>(n * a.ffn);
    l.y = w.add_array<T>(n * a.d);
    l.sort_bytes = sort_bytes;
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::positive("tokens", a.tokens));
    TL_RETURN_IF_ERROR(check::positive("d", a.d));
    TL_RETURN_IF_ERROR(check::positive("ffn", a.ffn));
    if (a.experts < 1 || a.experts > kMaxExperts) {
      return Status::argument(a.experts < 1 ? StatusCode::invalid_argument : StatusCode::unsupported, "experts",
                              "1 to 256 experts", "%d", a.experts);
    }
    if (a.top_k < 1 || a.top_k > a.experts || a.top_k > kMaxTopK) {
      return Status::argument(StatusCode::invalid_argument, "top_k", "1 <= top_k <= min(experts, 8)", "%d (experts %d)",
                              a.top_k, a.experts);
    }
    TL_RETURN_IF_ERROR(check::product_fits_int32("tokens * top_k", a.tokens, a.top_k));
    TL_RETURN_IF_ERROR(check::product_fits_int32("tokens * top_k * 2 ffn", a.tokens * a.top_k, 2 * std::int64_t{a.ffn}));
    TL_RETURN_IF_ERROR(check::product_fits_int32("tokens * top_k * d", a.tokens * a.top_k, a.d));
    if (!std::is_same_v<T, float> && (a.d % 8 != 0 || a.ffn % 8 != 0)) {
      return Status::argument(StatusCode::unsupported, "d, ffn", "multiples of 8 (16-byte rows)", "d %d, ffn %d", a.d,
                              a.ffn);
    }
    const std::int64_t xs = a.x_stride ? a.x_stride : a.d;
    TL_RETURN_IF_ERROR(detail::check_gemm_operand<T>("x", a.x, xs, a.d));
    TL_RETURN_IF_ERROR(detail::check_gemm_operand<T>("router", a.router, a.d, a.d));
    TL_RETURN_IF_ERROR(detail::check_gemm_operand<T>("gate_up", a.gate_up, a.d, a.d));
    TL_RETURN_IF_ERROR(detail::check_gemm_operand<T>("down", a.down, a.ffn, a.ffn));
    TL_RETURN_IF_ERROR(detail::check_row("out", a.out, a.out_stride, a.d));
    if (static_cast<const void*>(a.out) == static_cast<const void*>(a.x)) {
      return Status::argument(StatusCode::invalid_argument, "out", "a buffer other than x", "out == x");
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Moe>(a, ws));
    const Layout l = layout(a);
    const std::int64_t n = a.tokens * a.top_k, xs = a.x_stride ? a.x_stride : a.d,
                       os = a.out_stride ? a.out_stride : a.d, f2 = 2 * std::int64_t{a.ffn};
    T* logits = a.router_logits ? a.router_logits : ws.at<T>(l.logits);
    // 1. The router's logits, rounded to T (one group: all tokens).
    TL_RETURN_IF_ERROR(detail::launch_grouped_gemm<T>(
        {a.x, xs, a.router, a.d, 0, logits, a.experts, VarlenBatch::uniform(1, a.tokens), a.experts, a.d, nullptr},
        stream));
    // 2. The top k of each token, and the sort's input.
    auto* keys_in = ws.at<std::uint32_t>(l.keys_in);
    auto* slots_in = ws.at<std::int32_t>(l.slots_in);
    auto* keys = ws.at<std::uint32_t>(l.keys_out);
    auto* slots = ws.at<std::int32_t>(l.slots_out);
    auto* weight = ws.at<float>(l.weight);
    TL_RETURN_IF_ERROR(launch<detail::RouteKernel<T>>(
        {logits, a.experts, a.tokens, a.experts, a.top_k, a.renormalize, ws.at<std::int32_t>(l.expert), weight, keys_in,
         slots_in},
        grid_for(a.tokens, detail::RouteKernel<T>::kThreads / 32, 8), stream));
    // 3. Dispatch: sorted by expert (stable: token order within an expert).
    std::size_t sort_bytes = l.sort_bytes;
    TL_RETURN_IF_ERROR(device::sort_pairs(ws.at<void>(l.sort), sort_bytes, keys_in, keys, slots_in, slots, n, 0,
                                          key_bits(a.experts), stream));
    auto* offsets = ws.at<std::int32_t>(l.offsets);
    auto* position = ws.at<std::int32_t>(l.position);
    TL_RETURN_IF_ERROR(launch<detail::DispatchKernel>({keys, slots, n, a.experts, offsets, position},
                                                      grid_for(n + 1, detail::DispatchKernel::kThreads, 8), stream));
    T* x_perm = ws.at<T>(l.x_perm);
    T* h = ws.at<T>(l.h);
    T* act = ws.at<T>(l.act);
    T* y = ws.at<T>(l.y);
    const bool vec_x = detail::vectorizable<T>(a.d, {{a.x, xs}, {x_perm, a.d}});
    TL_RETURN_IF_ERROR(detail::dispatch_width<T>(vec_x, [&](auto w) {
      using K = detail::GatherRowsKernel<T, decltype(w)::value>;
      return launch<K>({a.x, xs, slots, n, a.top_k, a.d, x_perm}, detail::row_grid(n), stream);
    }));
    // 4. The experts: [gate | up] = x · W_guᵀ, act(gate) · up, · W_downᵀ.
    const VarlenBatch groups = VarlenBatch::packed(offsets, a.experts, n);
    TL_RETURN_IF_ERROR(detail::launch_grouped_gemm<T>(
        {x_perm, a.d, a.gate_up, a.d, f2 * a.d, h, f2, groups, static_cast<int>(f2), a.d, nullptr}, stream));
    TL_RETURN_IF_ERROR((Gated<A, T>::run(
        {.gate = h, .up = h + a.ffn, .rows = n, .cols = a.ffn, .gate_stride = f2, .up_stride = f2, .out = act}, {},
        stream)));
    TL_RETURN_IF_ERROR(detail::launch_grouped_gemm<T>(
        {act, a.ffn, a.down, a.ffn, std::int64_t{a.d} * a.ffn, y, a.d, groups, a.d, a.ffn, nullptr}, stream));
    // 5. Combine: each token's k rows, weighted, in fp32.
    const bool vec_o = detail::vectorizable<T>(a.d, {{a.out, os}, {y, a.d}});
    return detail::dispatch_width<T>(vec_o, [&](auto w) {
      using K = detail::CombineKernel<T, decltype(w)::value>;
      return launch<K>({y, weight, position, a.tokens, a.top_k, a.d, a.out, os}, detail::row_grid(a.tokens), stream);
    });
  }
};

template <StorageFloat T>
struct MoeBalanceLoss {
  static constexpr const char* kName = "blocks::MoeBalanceLoss";
  static constexpr int kBlocks = 64;  // partial sums, added in block order
  struct Arguments {
    const T* logits = nullptr;  // [rows, experts]: every layer's router logits, stacked
    std::int64_t rows = 0;
    int experts = 0, top_k = 0;
    std::int64_t stride = 0;    // 0: packed
    float* loss = nullptr;      // device scalar (unscaled: the model multiplies by router_aux_loss_coef)
    float* fraction = nullptr;  // [experts], optional: slots routed to each expert / rows, for MoeBackward
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::positive("rows", a.rows));
    if (a.experts < 1 || a.experts > detail::kMoeMaxExperts) {
      return Status::argument(StatusCode::unsupported, "experts", "1 to 256 experts", "%d", a.experts);
    }
    if (a.top_k < 1 || a.top_k > a.experts || a.top_k > detail::kMoeMaxTopK) {
      return Status::argument(StatusCode::invalid_argument, "top_k", "1 <= top_k <= min(experts, 8)", "%d", a.top_k);
    }
    TL_RETURN_IF_ERROR(detail::check_row("logits", a.logits, a.stride, a.experts));
    return check::not_null("loss", a.loss);
  }
  static std::size_t workspace_size(const Arguments& a) {
    return align_up(sizeof(float) * 2 * kBlocks * static_cast<std::size_t>(a.experts), kWorkspaceAlignment);
  }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<MoeBalanceLoss>(a, ws));
    const int blocks = static_cast<int>(a.rows < kBlocks ? a.rows : kBlocks);
    auto* partial = ws.at<float>(0);
    TL_RETURN_IF_ERROR(launch<detail::BalanceKernel<T>>(
        {a.logits, a.stride ? a.stride : a.experts, a.rows, a.experts, a.top_k, (a.rows + blocks - 1) / blocks, partial},
        dim3(static_cast<unsigned>(blocks)), stream));
    TL_RETURN_IF_ERROR(
        launch<detail::BalanceTotalKernel>({partial, blocks, a.experts, a.rows, a.loss}, dim3(1), stream));
    if (!a.fraction) return Status::ok();
    return launch<detail::BalanceFractionKernel>({partial, blocks, a.experts, a.rows, a.fraction}, dim3(1), stream);
  }
};

// The MoE block's backward. It reads the forward's state from the forward's
// workspace: allocate MoeBackward::workspace_size() bytes once, pass them to
// Moe::run (which uses the first Moe::workspace_size() of them) and then,
// untouched, to MoeBackward::run.
//
//   dL/dy = w · dL/dout; dL/dw = <dL/dout, y>        (per routed slot)
//   dL/dW_down[e] += dyᵀ · act; dL/dact = dy · W_down[e]
//   dL/dgate, dL/dup (GatedBackward)
//   dL/dW_gu[e] += dhᵀ · x; dL/dx_perm = dh · W_gu[e]
//   dL/dlogits through the renormalisation and the softmax (+ the balance
//   loss's gradient, given its fractions from MoeBalanceLoss)
//   dL/dW_router += dlogitsᵀ · x
//   dL/dx = Σ_slots dL/dx_perm + dlogits · W_router
// Weight gradients are fp32, written or accumulated, in a fixed order.
template <ActivationPolicy A, StorageFloat T>
struct MoeBackward {
  static constexpr const char* kName = "blocks::MoeBackward";
  using Forward = Moe<A, T>;
  struct Arguments {
    typename Forward::Arguments forward;  // as given to Moe::run
    const T* grad_out = nullptr;          // [tokens, d]
    std::int64_t grad_out_stride = 0, grad_x_stride = 0;
    T* grad_x = nullptr;                  // [tokens, d]
    float* grad_router = nullptr;         // [experts, d], optional
    float* grad_gate_up = nullptr;        // [experts, 2 ffn, d], optional
    float* grad_down = nullptr;           // [experts, d, ffn], optional
    bool accumulate_weights = false;
    // The load-balancing loss's gradient, optional: its fractions (from
    // MoeBalanceLoss), the rows it averaged over (layers · tokens) and its
    // scale (router_aux_loss_coef · dL/dloss).
    const float* balance_fraction = nullptr;
    std::int64_t balance_rows = 0;
    float balance_scale = 0.0f;
  };
  static std::int64_t logits_stride(int experts) { return (experts + 7) / 8 * 8; }
  struct Layout {
    std::size_t dlogits, dw, dy, dact, dh, dx_perm, bytes;
  };
  static Layout layout(const Arguments& a) {
    const auto& f = a.forward;
    const std::int64_t n = f.tokens * f.top_k;
    WorkspaceLayout w;
    w.add(Forward::layout(f).bytes);
    Layout l{};
    l.dlogits = w.add_array<T>(f.tokens * logits_stride(f.experts));
    l.dw = w.add_array<float>(n);
    l.dy = w.add_array<T>(n * f.d);
    l.dact = w.add_array<T>(n * f.ffn);
    l.dh = w.add_array<T>(n * 2 * std::int64_t{f.ffn});
    l.dx_perm = w.add_array<T>(n * f.d);
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(Forward::can_implement(a.forward));
    const int d = a.forward.d;
    TL_RETURN_IF_ERROR(detail::check_row("grad_out", a.grad_out, a.grad_out_stride, d));
    TL_RETURN_IF_ERROR(detail::check_row("grad_x", a.grad_x, a.grad_x_stride, d));
    if (a.balance_fraction && !(a.balance_rows > 0 && std::isfinite(a.balance_scale))) {
      return Status::argument(StatusCode::invalid_argument, "balance_rows, balance_scale",
                              "rows > 0 and a finite scale with balance_fraction", "rows %lld, scale %g",
                              static_cast<long long>(a.balance_rows), static_cast<double>(a.balance_scale));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<MoeBackward>(a, ws));
    const auto& f = a.forward;
    const auto fl = Forward::layout(f);
    const Layout l = layout(a);
    const std::int64_t n = f.tokens * f.top_k, xs = f.x_stride ? f.x_stride : f.d, f2 = 2 * std::int64_t{f.ffn},
                       gs = a.grad_out_stride ? a.grad_out_stride : f.d, dxs = a.grad_x_stride ? a.grad_x_stride : f.d,
                       ls = logits_stride(f.experts);
    const T* logits = f.router_logits ? f.router_logits : ws.at<T>(fl.logits);
    const auto* slots = ws.at<std::int32_t>(fl.slots_out);
    const auto* weight = ws.at<float>(fl.weight);
    const auto* offsets = ws.at<std::int32_t>(fl.offsets);
    const T* x_perm = ws.at<T>(fl.x_perm);
    const T* h = ws.at<T>(fl.h);
    const T* act = ws.at<T>(fl.act);
    const T* y = ws.at<T>(fl.y);
    T* dy = ws.at<T>(l.dy);
    T* dact = ws.at<T>(l.dact);
    T* dh = ws.at<T>(l.dh);
    T* dx_perm = ws.at<T>(l.dx_perm);
    T* dlogits = ws.at<T>(l.dlogits);
    auto* dw = ws.at<float>(l.dw);
    const VarlenBatch groups = VarlenBatch::packed(offsets, f.experts, n);
    // Through the combine.
    TL_RETURN_IF_ERROR(launch<detail::ScatterGradKernel<T>>({a.grad_out, gs, y, weight, slots, n, f.top_k, f.d, dy, dw},
                                                            detail::row_grid(n), stream));
    // Through the down projection and the activation.
    if (a.grad_down) {
      TL_RETURN_IF_ERROR(detail::launch_grouped_wgrad<T>(
          {dy, f.d, act, f.ffn, a.grad_down, groups, f.d, f.ffn, 0, a.accumulate_weights}, stream));
    }
    TL_RETURN_IF_ERROR((detail::launch_grouped_gemm<T, true>(
        {dy, f.d, f.down, f.ffn, std::int64_t{f.d} * f.ffn, dact, f.ffn, groups, f.ffn, f.d, nullptr}, stream)));
    TL_RETURN_IF_ERROR((GatedBackward<A, T>::run({.gate = h, .up = h + f.ffn, .grad_out = dact, .rows = n,
                                                  .cols = f.ffn, .gate_stride = f2, .up_stride = f2,
                                                  .grad_gate_stride = f2, .grad_up_stride = f2, .grad_gate = dh,
                                                  .grad_up = dh + f.ffn},
                                                 {}, stream)));
    // Through the gate_up projection.
    if (a.grad_gate_up) {
      TL_RETURN_IF_ERROR(detail::launch_grouped_wgrad<T>(
          {dh, f2, x_perm, f.d, a.grad_gate_up, groups, static_cast<int>(f2), f.d, 0, a.accumulate_weights}, stream));
    }
    TL_RETURN_IF_ERROR((detail::launch_grouped_gemm<T, true>(
        {dh, f2, f.gate_up, f.d, f2 * f.d, dx_perm, f.d, groups, f.d, static_cast<int>(f2), nullptr}, stream)));
    // Through the router.
    const float coef = a.balance_fraction ? a.balance_scale * static_cast<float>(f.experts) /
                                                static_cast<float>(a.balance_rows)
                                          : 0.0f;
    TL_RETURN_IF_ERROR(launch<detail::RouterBackwardKernel<T>>(
        {logits, f.experts, f.tokens, f.experts, f.top_k, f.renormalize, ws.at<std::int32_t>(fl.expert), weight, dw,
         a.balance_fraction, coef, dlogits, ls},
        grid_for(f.tokens, detail::RouterBackwardKernel<T>::kThreads / 32, 8), stream));
    const VarlenBatch all = VarlenBatch::uniform(1, f.tokens);
    if (a.grad_router) {
      TL_RETURN_IF_ERROR(detail::launch_grouped_wgrad<T>(
          {dlogits, ls, f.x, xs, a.grad_router, all, f.experts, f.d, 0, a.accumulate_weights}, stream));
    }
    // dL/dx: the experts' rows summed per token, then the router's part added.
    const auto* position = ws.at<std::int32_t>(fl.position);
    const bool vec = detail::vectorizable<T>(f.d, {{a.grad_x, dxs}, {dx_perm, f.d}});
    TL_RETURN_IF_ERROR(detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::CombineKernel<T, decltype(w)::value>;
      return launch<K>({dx_perm, nullptr, position, f.tokens, f.top_k, f.d, a.grad_x, dxs}, detail::row_grid(f.tokens),
                       stream);
    }));
    detail::GemmParams<T> g{dlogits, ls, f.router, f.d, 0, a.grad_x, dxs, all, f.d, f.experts, nullptr};
    g.accumulate = true;
    return detail::launch_grouped_gemm<T, true>(g, stream);
  }
};

}  // namespace tokenless::blocks
