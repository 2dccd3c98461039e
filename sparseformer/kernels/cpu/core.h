// Block-sparse attention for CPUs, the core shared by every front-end: forward and backward over a
// block-CSR layout on raw pointers. No torch, ATen or ONNX Runtime type appears here: a front-end
// (attention.cpp for ATen/PyTorch, sparseformer/export/ort_op/ for ONNX Runtime) checks its own
// tensors, fills a Problem, calls check_sizes / check_layout, and runs forward_impl /
// backward_impl with its own parallel-for (an Exec, see for_each_item).
//
// Contract (see sparseformer/layout.py, BlockLayout):
//   q [B, H, Lq, D], k [B, Hk, Lk, D], v [B, Hk, Lk, Dv], one dtype (float32, float64, bfloat16),
//   H % Hk == 0; query head h reads kv head h / (H / Hk).
//   Rows r = hl * nq + qb of the CSR (hl < Hl, Hl = 1 or H) list key tiles kb = col_idx[e] for
//   e in [row_ptr[r], row_ptr[r + 1]); col_idx and mask_id may be longer than row_ptr[-1]: the
//   entries from row_ptr[-1] on are unused capacity, never read (LayoutPrefix, a layout cut to a
//   length known only at run time, keeps its static size that way). mask_id[e] == -1: every pair of the tile attends;
//   otherwise masks[mask_id[e]] (bool [bs, bs]) says which pairs attend.
//   score(i, j) = cap(scale * <q_i, k_j>) + log_weight[e] - slopes[h] * |i + q_offset - j|,
//   cap(s) = softcap * tanh(s / softcap) when softcap is given (logit soft-capping), else s;
//   masked by the tile mask and key_padding_mask [B, Lk] (True = keep). A query row without any
//   attending key gives 0 and logsumexp -inf.
//
// Design:
//   * forward: one work item = (batch, head, query block). The query block is multiplied against
//     the listed key tiles with one GEMM per run of consecutive tiles (up to kRunTarget keys:
//     sliding windows give runs of 3 tiles, and wider GEMMs run closer to peak); each tile's bias
//     and element mask are applied to its columns (full tiles skip the mask), an online softmax
//     (running max / sum, FlashAttention style) turns the scores into weights in place, and a
//     second GEMM accumulates weights @ V. K and V are read in place, never gathered (bfloat16 runs
//     are widened to float32 in a per-thread scratch buffer, one run at a time).
//   * backward: FlashAttention-2 recomputation from the saved logsumexp, in two passes without
//     atomics or per-thread copies of dK / dV: pass A over (batch, head, query block) rows gives dQ,
//     pass B over (batch, kv head, key tile) columns gives dK and dV, walking the transposed layout
//     (built here in O(nnz)) with runs of consecutive query blocks. Scores and dP are recomputed in
//     both passes: 7 GEMMs per tile instead of FlashAttention-2's 5, in exchange for determinism
//     and full parallelism whatever the number of heads.
//   * soft-capping (softcap set): cap(s) = c * tanh(s / c) is applied to each GEMM's scores before
//     the tile terms, in the forward and in both backward passes; the backward keeps
//     1 - tanh^2 of the recomputed scores in a per-thread buffer (dC) and multiplies dS by it.
//     Attention sinks need nothing here: out * sigmoid(lse - sink) is applied on the op's outputs.
//   * GEMMs go to the BLAS that libtorch exports (sgemm_/dgemm_, MKL on x86 wheels), bound weakly so
//     the library still loads where none is exported (the ONNX Runtime library, which has no
//     libtorch); then a portable blocked kernel is used.
//   * Element-wise loops are plain C++ that the compiler vectorises (OpenMP SIMD hints for the
//     reductions). On x86-64 with GCC the hot float loops are also compiled for x86-64-v3 / v4 with
//     target_clones (picked at load time); every other target gets the baseline build. No intrinsics.
//   * Work items are handed out through an atomic counter on the front-end's threads (its Exec), so
//     uneven rows (global blocks, causal layouts) balance over threads; small problems use fewer
//     threads. Every item writes its own outputs, so results are bitwise the same for any number of
//     threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tile_ops.h"

namespace sparseformer_cpu {

// ------------------------------------------------------------------------------------------------
// Element types: scalar_t in memory, acc_t for arithmetic (bfloat16 -> float).
// ------------------------------------------------------------------------------------------------

// A front-end that has a reduced type (ATen's c10::BFloat16) specialises AccOf for it (type = float)
// before instantiating the kernels; such a scalar_t needs only static_cast to and from acc_t.
template <typename scalar_t>
struct AccOf {
  using type = scalar_t;
};

template <typename scalar_t>
constexpr bool is_reduced() {
  return !std::is_same<scalar_t, typename AccOf<scalar_t>::type>::value;
}

// rows x cols block from src (row stride ld) as acc_t. For acc_t == scalar_t returns src itself.
template <typename scalar_t, typename acc_t>
SF_INLINE const acc_t* as_acc(const scalar_t* src, int rows, int cols, int64_t ld, acc_t* scratch) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    (void)rows;
    (void)cols;
    (void)ld;
    (void)scratch;
    return src;
  } else {
    for (int r = 0; r < rows; ++r) {
      const scalar_t* s = src + r * ld;
      acc_t* d = scratch + static_cast<int64_t>(r) * cols;
      for (int c = 0; c < cols; ++c) d[c] = static_cast<acc_t>(s[c]);
    }
    return scratch;
  }
}

// ------------------------------------------------------------------------------------------------
// Inputs
// ------------------------------------------------------------------------------------------------

// Sizes and raw layout pointers of one call. A front-end fills the fields marked (in), then calls
// check_sizes (which fills the derived ones) and, once the layout pointers are set, check_layout.
struct Problem {
  int64_t B, H, Hk, Lq, Lk, D, Dv;  // (in)
  int64_t bs, Hl, P, nnz, q_offset;  // (in) block size, layout heads, masks, CSR entries
  int64_t group, nq, nk;             // derived: H / Hk, ceil(Lq / bs), ceil(Lk / bs)
  double scale;
  double softcap;  // > 0, or 0: no soft-capping
  const int64_t* row_ptr;
  const int64_t* col_idx;
  const int64_t* mask_id;
  const bool* masks;       // [P, bs, bs] or nullptr
  const double* log_weight;  // [nnz] or nullptr
  const double* slopes;      // [H] or nullptr
  const bool* kpm;           // [B, Lk] or nullptr
};

// ------------------------------------------------------------------------------------------------
// Checks: a failed one throws ProblemError (a std::invalid_argument: a Python ValueError through
// torch.ops; the ONNX Runtime front-end turns it into an ORT_INVALID_ARGUMENT status).
// ------------------------------------------------------------------------------------------------

struct ProblemError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream s;
  s << "sparseformer cpu attention: ";
  (s << ... << args);
  throw ProblemError(s.str());
}

#define SF_REQUIRE(cond, ...)                           \
  do {                                                  \
    if (!(cond)) ::sparseformer_cpu::fail(__VA_ARGS__); \
  } while (0)

// "[d0, d1, ...]" of n dims, for messages.
inline std::string dims_str(const int64_t* d, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// Fills p's sizes from a front-end's 4-D shapes q [B, H, Lq, D], k [B, Hk, Lk, D] and
// v [B, Hk, Lk, Dv], checking that they agree.
inline void set_sizes(Problem& p, const int64_t* qs, const int64_t* ks, const int64_t* vs) {
  p.B = qs[0];
  p.H = qs[1];
  p.Lq = qs[2];
  p.D = qs[3];
  p.Hk = ks[1];
  p.Lk = ks[2];
  p.Dv = vs[3];
  SF_REQUIRE(ks[0] == p.B && ks[3] == p.D, "k must be [B, Hk, Lk, D] = [", p.B, ", Hk, Lk, ", p.D, "] to match q ",
             dims_str(qs, 4), ", got ", dims_str(ks, 4));
  SF_REQUIRE(vs[0] == p.B && vs[1] == p.Hk && vs[2] == p.Lk, "v must be [B, Hk, Lk, Dv] = [", p.B, ", ", p.Hk, ", ",
             p.Lk, ", Dv] to match k ", dims_str(ks, 4), ", got ", dims_str(vs, 4));
}

// After check_sizes: checks the lengths of a front-end's layout tensors, 1-D row_ptr [Hl * nq + 1],
// col_idx [nnz], mask_id [nnz] and 3-D masks [P, bs, bs] (masks_shape: 3 values), and sets nnz and P.
inline void set_layout_sizes(Problem& p, int64_t row_ptr_len, int64_t col_idx_len, int64_t mask_id_len,
                             const int64_t* masks_shape) {
  const int64_t rows = p.Hl * p.nq;
  SF_REQUIRE(row_ptr_len == rows + 1, "row_ptr must have shape [layout_heads * nq + 1] = [", rows + 1,
             "] (layout_heads = ", p.Hl, ", nq = ceil(", p.Lq, " / ", p.bs, ") = ", p.nq, "), got [", row_ptr_len, "]");
  p.nnz = col_idx_len;
  SF_REQUIRE(mask_id_len == p.nnz, "mask_id must have shape [nnz] = [", p.nnz, "] like col_idx, got [", mask_id_len,
             "]");
  SF_REQUIRE(masks_shape[1] == p.bs && masks_shape[2] == p.bs, "masks must have shape [P, block_size, block_size] = [P, ",
             p.bs, ", ", p.bs, "], got ", dims_str(masks_shape, 3));
  p.P = masks_shape[0];
}

// Checks the sizes and scalars of p (B, H, Hk, Lq, Lk, D, Dv, bs, Hl, scale, softcap; softcap_given:
// the caller passed one, which must then be positive and finite) and fills group, nq and nk.
inline void check_sizes(Problem& p, bool softcap_given) {
  SF_REQUIRE(p.Hk >= 1 && p.H % p.Hk == 0, "the number of query heads (", p.H,
             ") must be a multiple of the number of key/value heads (", p.Hk, ")");
  SF_REQUIRE(p.D >= 1 && p.Dv >= 1, "head dims must be >= 1, got D = ", p.D, " and Dv = ", p.Dv);
  // the GEMM interface takes int dimensions
  SF_REQUIRE(p.D < (1 << 30) && p.Dv < (1 << 30), "head dims too large");
  p.group = p.H / p.Hk;
  SF_REQUIRE(p.bs >= 1 && p.bs <= 4096, "block_size must be in [1, 4096], got ", p.bs);
  p.nq = (p.Lq + p.bs - 1) / p.bs;
  p.nk = (p.Lk + p.bs - 1) / p.bs;
  SF_REQUIRE(p.Hl == 1 || p.Hl == p.H, "layout_heads must be 1 or num_heads (", p.H, "), got ", p.Hl);
  SF_REQUIRE(std::isfinite(p.scale), "scale must be finite, got ", p.scale);
  if (!softcap_given) p.softcap = 0.0;
  SF_REQUIRE(!softcap_given || (std::isfinite(p.softcap) && p.softcap > 0),
             "softcap must be a positive finite float or None, got ", p.softcap);
}

// Checks every index value of the layout (row_ptr [Hl * nq + 1], col_idx and mask_id [nnz]; the
// caller has checked those lengths and set the pointers), so that the kernels never read out of bounds.
inline void check_layout(const Problem& p) {
  const int64_t rows = p.Hl * p.nq;
  SF_REQUIRE(p.row_ptr[0] == 0, "row_ptr[0] must be 0, got ", p.row_ptr[0]);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t a = p.row_ptr[r], b = p.row_ptr[r + 1];
    SF_REQUIRE(b >= a, "row_ptr must be non-decreasing, got row_ptr[", r, "] = ", a, " > row_ptr[", r + 1, "] = ", b);
    SF_REQUIRE(b <= p.nnz, "row_ptr[", r + 1, "] = ", b, " exceeds nnz = ", p.nnz);
  }
  for (int64_t r = 0; r < rows; ++r) {
    int64_t prev = -1;
    for (int64_t e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) {
      const int64_t kb = p.col_idx[e];
      SF_REQUIRE(kb >= 0 && kb < p.nk, "col_idx[", e, "] = ", kb,
                 " is out of range: expected a key block index in [0, ", p.nk, ") (nk = ceil(kv_len ", p.Lk,
                 " / block_size ", p.bs, "))");
      SF_REQUIRE(kb > prev, "col_idx must be strictly increasing within a row; row ", r, " has ", prev,
                 " followed by ", kb, " at entry ", e);
      prev = kb;
      const int64_t mid = p.mask_id[e];
      SF_REQUIRE(mid >= -1 && mid < p.P, "mask_id[", e, "] = ", mid,
                 " is out of range: expected -1 (full tile) or a mask index in [0, ", p.P, ")");
    }
  }
}

template <typename T>
SF_INLINE TileTerms<T> tile_terms(const Problem& p, int64_t e, int64_t b, int64_t h, int64_t i0, int64_t j0) {
  TileTerms<T> tt;
  const int64_t mid = p.mask_id[e];
  if (mid >= 0) {
    tt.mask = p.masks + mid * p.bs * p.bs;
    tt.mask_ld = p.bs;
  }
  if (p.kpm != nullptr) tt.keep = p.kpm + b * p.Lk + j0;
  if (p.log_weight != nullptr) {
    tt.has_lw = true;
    tt.log_weight = static_cast<T>(p.log_weight[e]);
  }
  if (p.slopes != nullptr && p.slopes[h] != 0.0) {
    tt.slope = static_cast<T>(p.slopes[h]);
    tt.dist0 = static_cast<T>(i0 + p.q_offset - j0);
  }
  return tt;
}

// Below this many flops per thread, more threads cost more (start-up, barriers) than they save.
constexpr double kFlopsPerThread = 2e6;

// Runs body(state, item) for item in [0, n) on up to all threads, handing items out dynamically
// (uneven rows balance); state = init() once per thread holds its scratch buffers. flops: the
// total work, which caps the number of threads for small problems.
// Exec is the front-end's parallel-for: exec.max_threads() says how many threads may run, and
// exec.run(t, fn) calls fn() on t threads at once (fewer is fine: the counter hands out the items)
// and returns when every call has returned.
template <typename Exec, typename Init, typename Body>
void for_each_item(const Exec& exec, int64_t n, double flops, Init&& init, Body&& body) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t by_work = static_cast<int64_t>(std::min(flops / kFlopsPerThread, 1e9));
  const int64_t nthreads = std::max<int64_t>(1, std::min<int64_t>({exec.max_threads(), n, by_work}));
  exec.run(nthreads, [&]() {
    auto state = init();
    for (;;) {
      const int64_t item = next.fetch_add(1, std::memory_order_relaxed);
      if (item >= n) break;
      body(state, item);
    }
  });
}

// Forward flops over the visited tiles (both products), an upper bound for partial tiles.
SF_INLINE double tile_flops(const Problem& p) {
  const double visited = static_cast<double>(p.row_ptr[p.Hl * p.nq]);  // entries in use (<= nnz)
  return 2.0 * static_cast<double>(p.B) * static_cast<double>(p.H / p.Hl) * visited *
         static_cast<double>(p.bs * p.bs) * static_cast<double>(p.D + p.Dv);
}

// Consecutive tiles are merged into one GEMM ("run") up to this many keys (forward, dQ pass) or
// query rows (dK/dV pass): wider GEMMs run closer to peak. Never fewer than one tile.
constexpr int64_t kRunTarget = 512;

SF_INLINE int64_t run_cap(int64_t bs) { return std::max<int64_t>(1, kRunTarget / bs); }

// ------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------

template <typename scalar_t, typename Exec>
void forward_impl(const Exec& exec, const Problem& p, const scalar_t* q, const scalar_t* k, const scalar_t* v, scalar_t* out,
                  typename AccOf<scalar_t>::type* lse) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr bool reduced = is_reduced<scalar_t>();
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  const int64_t cap = run_cap(p.bs);  // tiles per run
  const int64_t W = cap * p.bs;       // widest run, in keys
  const int64_t lds = W;
  const acc_t scale = static_cast<acc_t>(p.scale);
  const acc_t logit_cap = static_cast<acc_t>(p.softcap);
  constexpr acc_t ninf = -std::numeric_limits<acc_t>::infinity();

  struct State {
    Buffer<acc_t> S, acc, rmax, rsum, qf, kf, vf;
  };
  auto init = [&]() {
    return State{Buffer<acc_t>(p.bs * lds), Buffer<acc_t>(p.bs * Dv), Buffer<acc_t>(p.bs), Buffer<acc_t>(p.bs),
                 Buffer<acc_t>(reduced ? p.bs * D : 1), Buffer<acc_t>(reduced ? W * D : 1),
                 Buffer<acc_t>(reduced ? W * Dv : 1)};
  };
  auto body = [&](State& st, int64_t item) {
    const int64_t qb = item % p.nq;
    const int64_t bh = item / p.nq;
    const int64_t h = bh % p.H, b = bh / p.H;
    const int64_t kh = h / p.group;
    const int64_t i0 = qb * p.bs;
    const int m = static_cast<int>(std::min<int64_t>(p.bs, p.Lq - i0));
    const int64_t row = (p.Hl == 1 ? 0 : h) * p.nq + qb;
    const int64_t e0 = p.row_ptr[row], e1 = p.row_ptr[row + 1];

    const scalar_t* kbase = k + (b * p.Hk + kh) * p.Lk * p.D;
    const scalar_t* vbase = v + (b * p.Hk + kh) * p.Lk * p.Dv;
    scalar_t* op = out + ((b * p.H + h) * p.Lq + i0) * p.Dv;
    acc_t* lp = lse + (b * p.H + h) * p.Lq + i0;

    acc_t* S = st.S.get();
    acc_t* acc = st.acc.get();
    acc_t* rmax = st.rmax.get();
    acc_t* rsum = st.rsum.get();
    for (int r = 0; r < m; ++r) {
      rmax[r] = ninf;
      rsum[r] = acc_t(0);
    }
    std::fill(acc, acc + static_cast<int64_t>(m) * Dv, acc_t(0));

    const acc_t* qa =
        e1 > e0 ? as_acc<scalar_t, acc_t>(q + ((b * p.H + h) * p.Lq + i0) * p.D, m, D, p.D, st.qf.get()) : nullptr;
    for (int64_t e = e0; e < e1;) {
      // a run: entries e .. f-1 whose key tiles are consecutive
      int64_t f = e + 1;
      while (f < e1 && f - e < cap && p.col_idx[f] == p.col_idx[f - 1] + 1) ++f;
      const int64_t j0 = p.col_idx[e] * p.bs;
      const int n = static_cast<int>(std::min<int64_t>((f - e) * p.bs, p.Lk - j0));
      const acc_t* ka = as_acc<scalar_t, acc_t>(kbase + j0 * p.D, n, D, p.D, st.kf.get());
      const acc_t* va = as_acc<scalar_t, acc_t>(vbase + j0 * p.Dv, n, Dv, p.Dv, st.vf.get());
      // S = scale * Q K^T    [m x n]
      gemm_rm(false, true, m, n, D, scale, qa, D, ka, D, acc_t(0), S, static_cast<int>(lds));
      if (p.softcap > 0) softcap(S, lds, m, n, logit_cap, nullptr);
      for (int64_t t = e; t < f; ++t) {
        const int64_t c0 = (t - e) * p.bs;
        const int nt = static_cast<int>(std::min<int64_t>(p.bs, n - c0));
        bias_mask(S + c0, lds, m, nt, tile_terms<acc_t>(p, t, b, h, i0, j0 + c0));
      }
      softmax_update(S, lds, m, n, rmax, rsum, acc, Dv, Dv);
      // acc += P V            [m x Dv]
      gemm_rm(false, false, m, Dv, n, acc_t(1), S, static_cast<int>(lds), va, Dv, acc_t(1), acc, Dv);
      e = f;
    }
    for (int r = 0; r < m; ++r) {
      scalar_t* o = op + static_cast<int64_t>(r) * p.Dv;
      const acc_t* a = acc + static_cast<int64_t>(r) * Dv;
      if (rsum[r] > acc_t(0)) {
        const acc_t inv = acc_t(1) / rsum[r];
        for (int d = 0; d < Dv; ++d) o[d] = static_cast<scalar_t>(a[d] * inv);
        lp[r] = rmax[r] + std::log(rsum[r]);
      } else {
        for (int d = 0; d < Dv; ++d) o[d] = static_cast<scalar_t>(0);
        lp[r] = ninf;
      }
    }
  };
  for_each_item(exec, p.B * p.H * p.nq, tile_flops(p), init, body);
}

// ------------------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------------------

template <typename scalar_t, typename Exec>
void backward_impl(const Exec& exec, const Problem& p, const scalar_t* q, const scalar_t* k, const scalar_t* v, const scalar_t* dout,
                   const typename AccOf<scalar_t>::type* lse, const typename AccOf<scalar_t>::type* delta,
                   scalar_t* dq, scalar_t* dk, scalar_t* dv) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr bool reduced = is_reduced<scalar_t>();
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  const int64_t cap = run_cap(p.bs);
  const int64_t W = cap * p.bs;
  const int64_t lds = W;  // pass A: S is [bs x W]; pass B: S is [W x bs] (row stride bs)
  const acc_t scale = static_cast<acc_t>(p.scale);
  const bool capped = p.softcap > 0;
  const acc_t logit_cap = static_cast<acc_t>(p.softcap);

  struct State {
    Buffer<acc_t> S, dP, dC, g1, g2, qf, of, kf, vf;  // dC: the soft-capping derivative of S's scores
  };
  auto init = [&]() {
    return State{Buffer<acc_t>(p.bs * lds), Buffer<acc_t>(p.bs * lds), Buffer<acc_t>(capped ? p.bs * lds : 1),
                 Buffer<acc_t>(p.bs * D), Buffer<acc_t>(p.bs * Dv), Buffer<acc_t>(reduced ? W * D : 1),
                 Buffer<acc_t>(reduced ? W * Dv : 1), Buffer<acc_t>(reduced ? W * D : 1),
                 Buffer<acc_t>(reduced ? W * Dv : 1)};
  };

  // Pass A: dQ, one item per (b, h, query block), runs of consecutive key tiles.
  auto body_q = [&](State& st, int64_t item) {
    const int64_t qb = item % p.nq;
    const int64_t bh = item / p.nq;
    const int64_t h = bh % p.H, b = bh / p.H;
    const int64_t kh = h / p.group;
    const int64_t i0 = qb * p.bs;
    const int m = static_cast<int>(std::min<int64_t>(p.bs, p.Lq - i0));
    const int64_t row = (p.Hl == 1 ? 0 : h) * p.nq + qb;
    const int64_t e0 = p.row_ptr[row], e1 = p.row_ptr[row + 1];
    const int64_t qoff = (b * p.H + h) * p.Lq + i0;
    acc_t* gq = st.g1.get();
    std::fill(gq, gq + static_cast<int64_t>(m) * D, acc_t(0));
    if (e1 > e0) {
      const acc_t* qa = as_acc<scalar_t, acc_t>(q + qoff * p.D, m, D, p.D, st.qf.get());
      const acc_t* oa = as_acc<scalar_t, acc_t>(dout + qoff * p.Dv, m, Dv, p.Dv, st.of.get());
      const scalar_t* kbase = k + (b * p.Hk + kh) * p.Lk * p.D;
      const scalar_t* vbase = v + (b * p.Hk + kh) * p.Lk * p.Dv;
      acc_t* S = st.S.get();
      acc_t* dP = st.dP.get();
      acc_t* dC = capped ? st.dC.get() : nullptr;
      const int ld = static_cast<int>(lds);
      for (int64_t e = e0; e < e1;) {
        int64_t f = e + 1;
        while (f < e1 && f - e < cap && p.col_idx[f] == p.col_idx[f - 1] + 1) ++f;
        const int64_t j0 = p.col_idx[e] * p.bs;
        const int n = static_cast<int>(std::min<int64_t>((f - e) * p.bs, p.Lk - j0));
        const acc_t* ka = as_acc<scalar_t, acc_t>(kbase + j0 * p.D, n, D, p.D, st.kf.get());
        const acc_t* va = as_acc<scalar_t, acc_t>(vbase + j0 * p.Dv, n, Dv, p.Dv, st.vf.get());
        gemm_rm(false, true, m, n, D, scale, qa, D, ka, D, acc_t(0), S, ld);  // S = scale Q K^T
        if (capped) softcap(S, lds, m, n, logit_cap, dC);
        for (int64_t t = e; t < f; ++t) {
          const int64_t c0 = (t - e) * p.bs;
          const int nt = static_cast<int>(std::min<int64_t>(p.bs, n - c0));
          bias_mask(S + c0, lds, m, nt, tile_terms<acc_t>(p, t, b, h, i0, j0 + c0));
        }
        probs(S, lds, m, n, lse + qoff);                                          // P
        gemm_rm(false, true, m, n, Dv, acc_t(1), oa, Dv, va, Dv, acc_t(0), dP, ld);  // dP = dO V^T
        ds(S, dP, lds, m, n, delta + qoff, dC);                                   // dS
        gemm_rm(false, false, m, D, n, acc_t(1), dP, ld, ka, D, acc_t(1), gq, D);  // dQ += dS K
        e = f;
      }
    }
    scalar_t* o = dq + qoff * p.D;
    const int64_t cnt = static_cast<int64_t>(m) * D;
    for (int64_t t = 0; t < cnt; ++t) o[t] = static_cast<scalar_t>(gq[t] * scale);
  };

  // Transposed layout: for each (layout head, key block) the (query block, entry) pairs, by qb.
  const int64_t ncols = p.Hl * p.nk;
  std::vector<int64_t> cptr(ncols + 1, 0), cqb(p.nnz), ce(p.nnz);
  for (int64_t hl = 0; hl < p.Hl; ++hl)
    for (int64_t qb = 0; qb < p.nq; ++qb) {
      const int64_t row = hl * p.nq + qb;
      for (int64_t e = p.row_ptr[row]; e < p.row_ptr[row + 1]; ++e) cptr[hl * p.nk + p.col_idx[e] + 1]++;
    }
  for (int64_t c = 0; c < ncols; ++c) cptr[c + 1] += cptr[c];
  {
    std::vector<int64_t> fill(cptr.begin(), cptr.end() - 1);
    for (int64_t hl = 0; hl < p.Hl; ++hl)
      for (int64_t qb = 0; qb < p.nq; ++qb) {
        const int64_t row = hl * p.nq + qb;
        for (int64_t e = p.row_ptr[row]; e < p.row_ptr[row + 1]; ++e) {
          const int64_t slot = fill[hl * p.nk + p.col_idx[e]]++;
          cqb[slot] = qb;
          ce[slot] = e;
        }
      }
  }

  // Pass B: dK, dV, one item per (b, kv head, key block), runs of consecutive query blocks.
  auto body_kv = [&](State& st, int64_t item) {
    const int64_t kb = item % p.nk;
    const int64_t bk = item / p.nk;
    const int64_t kh = bk % p.Hk, b = bk / p.Hk;
    const int64_t j0 = kb * p.bs;
    const int n = static_cast<int>(std::min<int64_t>(p.bs, p.Lk - j0));
    const int64_t koff = (b * p.Hk + kh) * p.Lk + j0;
    acc_t* gk = st.g1.get();
    acc_t* gv = st.g2.get();
    std::fill(gk, gk + static_cast<int64_t>(n) * D, acc_t(0));
    std::fill(gv, gv + static_cast<int64_t>(n) * Dv, acc_t(0));
    const acc_t* ka = nullptr;
    const acc_t* va = nullptr;
    acc_t* S = st.S.get();
    acc_t* dP = st.dP.get();
    acc_t* dC = capped ? st.dC.get() : nullptr;
    const int ld = n;  // S is [rows x n] here
    for (int64_t h = kh * p.group; h < (kh + 1) * p.group; ++h) {
      const int64_t col = (p.Hl == 1 ? 0 : h) * p.nk + kb;
      const int64_t t1 = cptr[col + 1];
      for (int64_t t = cptr[col]; t < t1;) {
        if (ka == nullptr) {
          ka = as_acc<scalar_t, acc_t>(k + koff * p.D, n, D, p.D, st.kf.get());
          va = as_acc<scalar_t, acc_t>(v + koff * p.Dv, n, Dv, p.Dv, st.vf.get());
        }
        int64_t u = t + 1;
        while (u < t1 && u - t < cap && cqb[u] == cqb[u - 1] + 1) ++u;
        const int64_t i0 = cqb[t] * p.bs;
        const int mr = static_cast<int>(std::min<int64_t>((u - t) * p.bs, p.Lq - i0));
        const int64_t qoff = (b * p.H + h) * p.Lq + i0;
        const acc_t* qa = as_acc<scalar_t, acc_t>(q + qoff * p.D, mr, D, p.D, st.qf.get());
        const acc_t* oa = as_acc<scalar_t, acc_t>(dout + qoff * p.Dv, mr, Dv, p.Dv, st.of.get());
        gemm_rm(false, true, mr, n, D, scale, qa, D, ka, D, acc_t(0), S, ld);  // S = scale Q K^T  [mr x n]
        if (capped) softcap(S, ld, mr, n, logit_cap, dC);
        for (int64_t w = t; w < u; ++w) {
          const int64_t r0 = (w - t) * p.bs;
          const int mt = static_cast<int>(std::min<int64_t>(p.bs, mr - r0));
          bias_mask(S + r0 * ld, ld, mt, n, tile_terms<acc_t>(p, ce[w], b, h, i0 + r0, j0));
        }
        probs(S, ld, mr, n, lse + qoff);
        gemm_rm(true, false, n, Dv, mr, acc_t(1), S, ld, oa, Dv, acc_t(1), gv, Dv);    // dV += P^T dO
        gemm_rm(false, true, mr, n, Dv, acc_t(1), oa, Dv, va, Dv, acc_t(0), dP, ld);  // dP = dO V^T
        ds(S, dP, ld, mr, n, delta + qoff, dC);
        gemm_rm(true, false, n, D, mr, acc_t(1), dP, ld, qa, D, acc_t(1), gk, D);  // dK += dS^T Q
        t = u;
      }
    }
    scalar_t* ok = dk + koff * p.D;
    const int64_t ck = static_cast<int64_t>(n) * D;
    for (int64_t t = 0; t < ck; ++t) ok[t] = static_cast<scalar_t>(gk[t] * scale);
    scalar_t* ov = dv + koff * p.Dv;
    const int64_t cv = static_cast<int64_t>(n) * Dv;
    for (int64_t t = 0; t < cv; ++t) ov[t] = static_cast<scalar_t>(gv[t]);
  };

  for_each_item(exec, p.B * p.H * p.nq, 1.5 * tile_flops(p), init, body_q);
  for_each_item(exec, p.B * p.Hk * p.nk, 2.0 * tile_flops(p), init, body_kv);
}

// delta[row] = sum_d dO[row, d] * O[row, d] - grad_lse[row]    (glse may be nullptr: 0)
template <typename scalar_t, typename Exec>
void delta_impl(const Exec& exec, int64_t rows, int64_t Dv, const scalar_t* dout, const scalar_t* out,
                const typename AccOf<scalar_t>::type* glse, typename AccOf<scalar_t>::type* delta) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr int64_t kRows = 256;  // rows per item
  struct None {};
  auto body = [&](None&, int64_t item) {
    const int64_t end = std::min(rows, (item + 1) * kRows);
    for (int64_t r = item * kRows; r < end; ++r) {
      const scalar_t* a = dout + r * Dv;
      const scalar_t* o = out + r * Dv;
      acc_t s = acc_t(0);
      for (int64_t d = 0; d < Dv; ++d) s += static_cast<acc_t>(a[d]) * static_cast<acc_t>(o[d]);
      delta[r] = s - (glse != nullptr ? glse[r] : acc_t(0));
    }
  };
  for_each_item(exec, (rows + kRows - 1) / kRows, 2.0 * static_cast<double>(rows) * static_cast<double>(Dv),
                [] { return None{}; }, body);
}


}  // namespace sparseformer_cpu
