// ATen front-end of the native CPU kernel (the kernel itself is core.h): checks the torch tensors,
// fills a Problem, runs the core's forward / backward on at::parallel_for threads, and binds the
// entry points as operators of the namespace sparseformer_cpu (TORCH_LIBRARY, loaded by build.py as
// torch.ops.sparseformer_cpu). The contract and the design of the kernel are described at the top of
// core.h. Only the ATen headers used are included, not torch/extension.h: the build takes a third of
// the time.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core.h"

namespace sparseformer_cpu {

using at::Tensor;

// bfloat16 tensors compute in float32 (see AccOf in core.h).
template <>
struct AccOf<c10::BFloat16> {
  using type = float;
};

// The core's parallel-for on ATen's intra-op threads (OpenMP in the torch wheels).
struct AtenExec {
  int64_t max_threads() const { return at::get_num_threads(); }
  template <typename F>
  void run(int64_t nthreads, F&& fn) const {
    at::parallel_for(0, nthreads, 1, [&](int64_t, int64_t) { fn(); });
  }
};

static std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

#define SF_CHECK(cond, ...) TORCH_CHECK_VALUE(cond, "sparseformer cpu attention: ", __VA_ARGS__)

static void check_cpu(const Tensor& t, const char* name) {
  SF_CHECK(t.device().is_cpu(), name, " must be on the CPU, got device ", t.device());
  SF_CHECK(t.layout() == at::kStrided, name, " must be a dense (strided) tensor, got layout ", t.layout());
}

// The data of an optional contiguous float64 vector of length n, or nullptr when absent.
static const double* optional_f64_vector(const c10::optional<Tensor>& opt, const char* name, int64_t n,
                                         const char* dims) {
  if (!opt.has_value() || !opt->defined()) return nullptr;
  const Tensor& t = *opt;
  check_cpu(t, name);
  SF_CHECK(t.scalar_type() == at::kDouble, name, " must be float64, got ", t.scalar_type());
  SF_CHECK(t.dim() == 1 && t.size(0) == n, name, " must have shape ", dims, " = [", n, "], got ", shape_str(t));
  SF_CHECK(t.is_contiguous(), name, " must be contiguous");
  return t.data_ptr<double>();
}

// Validates everything the kernels rely on (shapes, dtypes here; sizes and every index value in
// core.h's check_sizes / check_layout) and fills p. Tensors passed in must already be contiguous.
static Problem make_problem(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& row_ptr,
                            const Tensor& col_idx, const Tensor& mask_id, const Tensor& masks,
                            const c10::optional<Tensor>& log_weight, const c10::optional<Tensor>& slopes,
                            const c10::optional<Tensor>& kpm, int64_t block_size, int64_t layout_heads,
                            int64_t q_offset, double scale, c10::optional<double> softcap) {
  check_cpu(q, "q");
  check_cpu(k, "k");
  check_cpu(v, "v");
  SF_CHECK(q.dim() == 4, "q must be 4-D [B, H, Lq, D], got shape ", shape_str(q));
  SF_CHECK(k.dim() == 4, "k must be 4-D [B, Hk, Lk, D], got shape ", shape_str(k));
  SF_CHECK(v.dim() == 4, "v must be 4-D [B, Hk, Lk, Dv], got shape ", shape_str(v));
  const auto st = q.scalar_type();
  SF_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16,
           "q must be float32, float64 or bfloat16, got ", st);
  SF_CHECK(k.scalar_type() == st, "k must have the dtype of q (", st, "), got ", k.scalar_type());
  SF_CHECK(v.scalar_type() == st, "v must have the dtype of q (", st, "), got ", v.scalar_type());
  Problem p{};
  set_sizes(p, q.sizes().data(), k.sizes().data(), v.sizes().data());
  p.bs = block_size;
  p.Hl = layout_heads;
  p.q_offset = q_offset;
  p.scale = scale;
  p.softcap = softcap.has_value() ? *softcap : 0.0;
  check_sizes(p, softcap.has_value());

  // layout tensors
  check_cpu(row_ptr, "row_ptr");
  check_cpu(col_idx, "col_idx");
  check_cpu(mask_id, "mask_id");
  check_cpu(masks, "masks");
  SF_CHECK(row_ptr.scalar_type() == at::kLong, "row_ptr must be int64, got ", row_ptr.scalar_type());
  SF_CHECK(col_idx.scalar_type() == at::kLong, "col_idx must be int64, got ", col_idx.scalar_type());
  SF_CHECK(mask_id.scalar_type() == at::kLong, "mask_id must be int64, got ", mask_id.scalar_type());
  SF_CHECK(masks.scalar_type() == at::kBool, "masks must be bool, got ", masks.scalar_type());
  const int64_t rows = p.Hl * p.nq;
  SF_CHECK(row_ptr.dim() == 1 && row_ptr.size(0) == rows + 1, "row_ptr must have shape [layout_heads * nq + 1] = [",
           rows + 1, "] (layout_heads = ", p.Hl, ", nq = ceil(", p.Lq, " / ", p.bs, ") = ", p.nq, "), got ",
           shape_str(row_ptr));
  SF_CHECK(col_idx.dim() == 1, "col_idx must be 1-D, got shape ", shape_str(col_idx));
  p.nnz = col_idx.size(0);
  SF_CHECK(mask_id.dim() == 1 && mask_id.size(0) == p.nnz, "mask_id must have shape [nnz] = [", p.nnz,
           "] like col_idx, got ", shape_str(mask_id));
  SF_CHECK(masks.dim() == 3 && masks.size(1) == p.bs && masks.size(2) == p.bs,
           "masks must have shape [P, block_size, block_size] = [P, ", p.bs, ", ", p.bs, "], got ",
           shape_str(masks));
  p.P = masks.size(0);
  p.row_ptr = row_ptr.data_ptr<int64_t>();
  p.col_idx = col_idx.data_ptr<int64_t>();
  p.mask_id = mask_id.data_ptr<int64_t>();
  p.masks = p.P > 0 ? masks.data_ptr<bool>() : nullptr;
  SF_CHECK(row_ptr.is_contiguous() && col_idx.is_contiguous() && mask_id.is_contiguous() && masks.is_contiguous(),
           "layout tensors must be contiguous");
  check_layout(p);

  p.log_weight = optional_f64_vector(log_weight, "log_weight", p.nnz, "[nnz]");
  p.slopes = optional_f64_vector(slopes, "slopes", p.H, "[num_heads]");
  p.kpm = nullptr;
  if (kpm.has_value() && kpm->defined()) {
    const Tensor& m = *kpm;
    check_cpu(m, "key_padding_mask");
    SF_CHECK(m.scalar_type() == at::kBool, "key_padding_mask must be bool (True = keep), got ", m.scalar_type());
    SF_CHECK(m.dim() == 2 && m.size(0) == p.B && m.size(1) == p.Lk, "key_padding_mask must have shape [B, Lk] = [",
             p.B, ", ", p.Lk, "], got ", shape_str(m));
    SF_CHECK(m.is_contiguous(), "key_padding_mask must be contiguous");
    p.kpm = m.data_ptr<bool>();
  }
  SF_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(), "q, k and v must be contiguous");
  return p;
}

// ------------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------------

static at::ScalarType acc_dtype(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

std::vector<Tensor> forward(const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& row_ptr,
                            const Tensor& col_idx, const Tensor& mask_id, const Tensor& masks,
                            const c10::optional<Tensor>& log_weight, const c10::optional<Tensor>& slopes,
                            const c10::optional<Tensor>& key_padding_mask, int64_t block_size, int64_t layout_heads,
                            int64_t q_offset, double scale, c10::optional<double> softcap) {
  const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const Problem p = make_problem(q, k, v, row_ptr, col_idx, mask_id, masks, log_weight, slopes, key_padding_mask,
                                 block_size, layout_heads, q_offset, scale, softcap);
  Tensor out = at::empty({p.B, p.H, p.Lq, p.Dv}, q.options());
  Tensor lse = at::empty({p.B, p.H, p.Lq}, q.options().dtype(acc_dtype(q.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "sparseformer_cpu_forward", [&] {
    using acc_t = typename AccOf<scalar_t>::type;
    forward_impl<scalar_t>(AtenExec{}, p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                           out.data_ptr<scalar_t>(), lse.data_ptr<acc_t>());
  });
  return {out, lse};
}

std::vector<Tensor> backward(const Tensor& grad_out_, const c10::optional<Tensor>& grad_lse_, const Tensor& q_,
                             const Tensor& k_, const Tensor& v_, const Tensor& out_, const Tensor& lse_,
                             const Tensor& row_ptr, const Tensor& col_idx, const Tensor& mask_id, const Tensor& masks,
                             const c10::optional<Tensor>& log_weight, const c10::optional<Tensor>& slopes,
                             const c10::optional<Tensor>& key_padding_mask, int64_t block_size, int64_t layout_heads,
                             int64_t q_offset, double scale, c10::optional<double> softcap) {
  const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const Problem p = make_problem(q, k, v, row_ptr, col_idx, mask_id, masks, log_weight, slopes, key_padding_mask,
                                 block_size, layout_heads, q_offset, scale, softcap);
  const auto st = q.scalar_type();
  const auto at_ = acc_dtype(st);
  check_cpu(grad_out_, "grad_out");
  check_cpu(out_, "out");
  check_cpu(lse_, "lse");
  const std::vector<int64_t> oshape{p.B, p.H, p.Lq, p.Dv}, lshape{p.B, p.H, p.Lq};
  SF_CHECK(grad_out_.sizes() == at::IntArrayRef(oshape), "grad_out must have shape [B, H, Lq, Dv], got ",
           shape_str(grad_out_));
  SF_CHECK(out_.sizes() == at::IntArrayRef(oshape), "out must have shape [B, H, Lq, Dv], got ", shape_str(out_));
  SF_CHECK(lse_.sizes() == at::IntArrayRef(lshape), "lse must have shape [B, H, Lq], got ", shape_str(lse_));
  const Tensor dout = grad_out_.to(st).contiguous();
  const Tensor out = out_.to(st).contiguous();
  const Tensor lse = lse_.to(at_).contiguous();
  Tensor glse;
  if (grad_lse_.has_value() && grad_lse_->defined()) {
    check_cpu(*grad_lse_, "grad_lse");
    SF_CHECK(grad_lse_->sizes() == at::IntArrayRef(lshape), "grad_lse must have shape [B, H, Lq], got ",
             shape_str(*grad_lse_));
    glse = grad_lse_->to(at_).contiguous();
  }
  Tensor delta = at::empty({p.B, p.H, p.Lq}, q.options().dtype(at_));
  Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, st, "sparseformer_cpu_backward", [&] {
    using acc_t = typename AccOf<scalar_t>::type;
    delta_impl<scalar_t>(AtenExec{}, p.B * p.H * p.Lq, p.Dv, dout.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                         glse.defined() ? glse.data_ptr<acc_t>() : nullptr, delta.data_ptr<acc_t>());
    backward_impl<scalar_t>(AtenExec{}, p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                            dout.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), delta.data_ptr<acc_t>(),
                            dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>());
  });
  return {dq, dk, dv};
}

void set_use_blas(bool on) { g_use_blas.store(on); }

std::string build_info() {
  std::string s = "gemm=";
  s += blas_available() ? (g_use_blas.load() ? "blas" : "portable (blas disabled)") : "portable (no blas symbols)";
  s += SF_HAS_CLONES ? ", simd=target_clones(default,x86-64-v3,x86-64-v4)" : ", simd=baseline";
  return s;
}

}  // namespace sparseformer_cpu

// Schemas: Tensor? is c10::optional<Tensor>, float is double, float? is c10::optional<double>.
TORCH_LIBRARY(sparseformer_cpu, m) {
  m.def(
      "forward(Tensor q, Tensor k, Tensor v, Tensor row_ptr, Tensor col_idx, Tensor mask_id, Tensor masks, "
      "Tensor? log_weight, Tensor? slopes, Tensor? key_padding_mask, int block_size, int layout_heads, "
      "int q_offset, float scale, float? softcap) -> Tensor[]",
      &sparseformer_cpu::forward);
  m.def(
      "backward(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor row_ptr, Tensor col_idx, Tensor mask_id, Tensor masks, Tensor? log_weight, Tensor? slopes, "
      "Tensor? key_padding_mask, int block_size, int layout_heads, int q_offset, float scale, float? softcap) "
      "-> Tensor[]",
      &sparseformer_cpu::backward);
  m.def("blas_available() -> bool", &sparseformer_cpu::blas_available);  // whether sgemm_/dgemm_ were found
  m.def("set_use_blas(bool on) -> ()", &sparseformer_cpu::set_use_blas);  // BLAS or the portable GEMM
  m.def("build_info() -> str", &sparseformer_cpu::build_info);             // how the kernels were built
}
