// ExecuTorch front-end of the native block-sparse attention kernel (sparseformer/kernels/cpu/core.h):
// a kernel library that registers, when loaded (dlopen, e.g. ctypes.CDLL), into the operator
// registry of the ExecuTorch runtime it links against (libexecutorch.so of the executorch wheel,
// the one its Python runtime uses).
//
// Kernel sparseformer_et::block_sparse_attention.out, the out variant of the PyTorch op
// sparseformer_et::block_sparse_attention (et_op/ops.py: the native op sparseformer::block_sparse_attention
// under the name a custom_op=True program calls), which to_executorch() puts in a program in place
// of the functional op. Its arguments, in the order of the schema:
//   0 q [B, H, Lq, D] float32, 1 k [B, Hk, Lk, D] float32, 2 v [B, Hk, Lk, Dv] float32,
//   3 row_ptr [layout_heads * nq + 1] int64, 4 col_idx [nnz] int64, 5 mask_id [nnz] int64,
//   6 masks [P, block_size, block_size] bool,
//   7 log_weight [nnz] float64 or None, 8 slopes [H] float64 or None, 9 key_padding_mask [B, Lk] bool
//   or None (True = keep), 10 block_size, 11 layout_heads, 12 q_offset (int), 13 scale (float),
//   14 softcap (float or None),
//   15 out [B, H, Lq, Dv] float32, 16 lse [B, H, Lq] float32 (written: resized to these sizes),
//   then the list of the two outputs that the emitter appends for a multi-output out variant.
// with nq = ceil(Lq / block_size). The semantics are those of core.h: the same templates run here.
//
// Threads: plain std::thread (threads.h), as many as the CPUs this process may run on; XNNPACK's
// pool is idle while a non-delegated kernel runs. GEMMs: the portable blocked kernel of tile_ops.h.
// Errors (bad shapes, dtypes or index values) are logged with ExecuTorch's ET_LOG and fail the
// method's execution with Error::InvalidArgument: ExecuTorch kernels do not throw.

#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <exception>
#include <string>
#include <vector>

#include "core.h"
#include "threads.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;
using sparseformer_cpu::Problem;

constexpr const char* kOpName = "sparseformer_et::block_sparse_attention.out";
constexpr size_t kNumArgs = 17;  // 15 inputs, out, lse (the emitter may append the outputs' list)

std::vector<int64_t> sizes(const Tensor& t) {
  std::vector<int64_t> s(static_cast<size_t>(t.dim()));
  for (ssize_t i = 0; i < t.dim(); ++i) s[static_cast<size_t>(i)] = t.size(i);
  return s;
}

std::string shape_str(const Tensor& t) {
  const auto s = sizes(t);
  return sparseformer_cpu::dims_str(s.data(), static_cast<int>(s.size()));
}

// t, checked to be a contiguous tensor of the given dtype and rank.
const Tensor& tensor(const EValue& e, const char* name, ScalarType dtype, ssize_t rank) {
  SF_REQUIRE(e.isTensor(), name, " must be a tensor");
  const Tensor& t = e.toTensor();
  SF_REQUIRE(t.scalar_type() == dtype, name, " has dtype ", static_cast<int>(t.scalar_type()),
             ", expected ExecuTorch ScalarType ", static_cast<int>(dtype));
  SF_REQUIRE(t.dim() == rank, name, " must be ", rank, "-D, got shape ", shape_str(t));
  SF_REQUIRE(executorch::runtime::tensor_is_contiguous(t), name, " must be contiguous");
  return t;
}

const Tensor* optional_tensor(const EValue& e, const char* name, ScalarType dtype, std::vector<int64_t> want) {
  if (e.isNone()) return nullptr;
  const Tensor& t = tensor(e, name, dtype, static_cast<ssize_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i)
    SF_REQUIRE(t.size(static_cast<ssize_t>(i)) == want[i], name, " has shape ", shape_str(t), ", expected size ",
               want[i], " in dim ", i);
  return &t;
}

void resize(Tensor& t, std::vector<SizesType> sizes, const char* name) {
  const Error err = executorch::runtime::resize_tensor(t, {sizes.data(), sizes.size()});
  SF_REQUIRE(err == Error::Ok, "cannot resize the output ", name, " (shape ", shape_str(t),
             ") to the attention's output shape");
}

void run(Span<EValue*> stack) {
  SF_REQUIRE(stack.size() >= kNumArgs, kOpName, " takes ", kNumArgs, " arguments, got ", stack.size());
  const Tensor& q = tensor(*stack[0], "q", ScalarType::Float, 4);
  const Tensor& k = tensor(*stack[1], "k", ScalarType::Float, 4);
  const Tensor& v = tensor(*stack[2], "v", ScalarType::Float, 4);
  Problem p{};
  sparseformer_cpu::set_sizes(p, sizes(q).data(), sizes(k).data(), sizes(v).data());
  p.bs = stack[10]->toInt();
  p.Hl = stack[11]->toInt();
  p.q_offset = stack[12]->toInt();
  p.scale = stack[13]->toDouble();
  const bool has_softcap = !stack[14]->isNone();
  p.softcap = has_softcap ? stack[14]->toDouble() : 0.0;
  sparseformer_cpu::check_sizes(p, has_softcap);

  const Tensor& row_ptr = tensor(*stack[3], "row_ptr", ScalarType::Long, 1);
  const Tensor& col_idx = tensor(*stack[4], "col_idx", ScalarType::Long, 1);
  const Tensor& mask_id = tensor(*stack[5], "mask_id", ScalarType::Long, 1);
  const Tensor& masks = tensor(*stack[6], "masks", ScalarType::Bool, 3);
  sparseformer_cpu::set_layout_sizes(p, row_ptr.size(0), col_idx.size(0), mask_id.size(0), sizes(masks).data());
  p.row_ptr = row_ptr.const_data_ptr<int64_t>();
  p.col_idx = col_idx.const_data_ptr<int64_t>();
  p.mask_id = mask_id.const_data_ptr<int64_t>();
  p.masks = p.P > 0 ? masks.const_data_ptr<bool>() : nullptr;
  sparseformer_cpu::check_layout(p);

  const Tensor* lw = optional_tensor(*stack[7], "log_weight", ScalarType::Double, {p.nnz});
  const Tensor* sl = optional_tensor(*stack[8], "slopes", ScalarType::Double, {p.H});
  const Tensor* kpm = optional_tensor(*stack[9], "key_padding_mask", ScalarType::Bool, {p.B, p.Lk});
  p.log_weight = lw ? lw->const_data_ptr<double>() : nullptr;
  p.slopes = sl ? sl->const_data_ptr<double>() : nullptr;
  p.kpm = kpm ? kpm->const_data_ptr<bool>() : nullptr;

  SF_REQUIRE(stack[15]->isTensor() && stack[16]->isTensor(), "out and lse must be tensors");
  Tensor& out = stack[15]->toTensor();
  Tensor& lse = stack[16]->toTensor();
  resize(out, {static_cast<SizesType>(p.B), static_cast<SizesType>(p.H), static_cast<SizesType>(p.Lq),
               static_cast<SizesType>(p.Dv)},
         "out");
  resize(lse, {static_cast<SizesType>(p.B), static_cast<SizesType>(p.H), static_cast<SizesType>(p.Lq)}, "lse");
  tensor(*stack[15], "out", ScalarType::Float, 4);
  tensor(*stack[16], "lse", ScalarType::Float, 3);
  sparseformer_cpu::forward_impl<float>(sparseformer_cpu::ThreadExec{sparseformer_cpu::available_cpus()}, p,
                                        q.const_data_ptr<float>(), k.const_data_ptr<float>(),
                                        v.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                                        lse.mutable_data_ptr<float>());
}

void block_sparse_attention_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  try {
    run(stack);
  } catch (const std::exception& e) {
    ET_LOG(Error, "%s: %s", kOpName, e.what());
    ctx.fail(Error::InvalidArgument);
  }
}

const executorch::runtime::Kernel kKernel(kOpName, block_sparse_attention_out);

// Registers the kernel when the library is loaded. A second registration of the same name (the
// library loaded twice under two paths) is refused by the registry, which logs it; nothing else.
const bool kRegistered = executorch::runtime::register_kernel(kKernel) == Error::Ok;

}  // namespace
