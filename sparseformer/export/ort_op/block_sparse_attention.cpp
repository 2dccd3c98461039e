// ONNX Runtime front-end of the native block-sparse attention kernel (sparseformer/kernels/cpu/core.h):
// a custom-op library that ONNX Runtime loads with SessionOptions.register_custom_ops_library(path).
//
// Op sparseformer.ai::BlockSparseAttention, version 1, CPU execution provider:
//   inputs   0 q [B, H, Lq, D] float32, 1 k [B, Hk, Lk, D] float32, 2 v [B, Hk, Lk, Dv] float32,
//            3 row_ptr [layout_heads * nq + 1] int64, 4 col_idx [nnz] int64, 5 mask_id [nnz] int64,
//            6 masks [P, block_size, block_size] bool (P may be 0),
//            7 log_weight [nnz] float64 (optional), 8 slopes [H] float64 (optional),
//            9 key_padding_mask [B, Lk] bool, True = keep (optional)
//   attributes  block_size, layout_heads, q_offset (int), scale (float), softcap (float, optional)
//   outputs  0 out [B, H, Lq, Dv] float32, 1 lse [B, H, Lq] float32 (optional: the row logsumexp)
// with nq = ceil(Lq / block_size). The semantics are those of core.h (and of the PyTorch op
// sparseformer::block_sparse_attention): the same templates run here, on raw pointers.
//
// Threads: plain std::thread, as many as the CPUs this process may run on (sched_getaffinity), fewer
// for small problems (core.h's for_each_item); the calling ORT thread is one of them. ONNX Runtime's
// intra-op pool is idle while a node of a sequential graph runs, so the two do not compete.
// GEMMs: the portable blocked kernel of tile_ops.h (no libtorch, so no BLAS symbols to bind to).
// Errors (bad shapes or index values) are thrown as std::exception from KernelCompute, which ONNX
// Runtime turns into a failed Run with the message.

#include <string>
#include <vector>

#include "core.h"
#include "ort_api.h"
#include "threads.h"

namespace {

using sparseformer_cpu::fail;
using sparseformer_cpu::Problem;
using sparseformer_cpu::ThreadExec;
using sparseformer_cpu::available_cpus;

constexpr const char* kDomain = "sparseformer.ai";
constexpr const char* kOpName = "BlockSparseAttention";
constexpr size_t kNumInputs = 10;
constexpr size_t kFirstOptionalInput = 7;

// Throws the message of a failed status (and releases it); does nothing on success (nullptr).
void check_status(const OrtApi* api, OrtStatus* status, const char* what) {
  if (status == nullptr) return;
  ort::fn<void (*)(OrtStatus*)>(api, ort::kReleaseStatus)(status);
  fail("ONNX Runtime call failed: ", what);
}

std::vector<int64_t> shape_of(const OrtApi* api, const OrtValue* value) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check_status(api,
               ort::fn<OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**)>(api, ort::kGetTensorTypeAndShape)(
                   value, &info),
               "GetTensorTypeAndShape");
  size_t n = 0;
  OrtStatus* s = ort::fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(api, ort::kGetDimensionsCount)(
      info, &n);
  std::vector<int64_t> dims(n);
  if (s == nullptr)
    s = ort::fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(api, ort::kGetDimensions)(
        info, dims.data(), n);
  ort::fn<void (*)(OrtTensorTypeAndShapeInfo*)>(api, ort::kReleaseTensorTypeAndShapeInfo)(info);
  check_status(api, s, "GetDimensions");
  return dims;
}

template <typename T>
T* data_of(const OrtApi* api, const OrtValue* value) {
  void* p = nullptr;
  check_status(api,
               ort::fn<OrtStatus* (*)(OrtValue*, void**)>(api, ort::kGetTensorMutableData)(
                   const_cast<OrtValue*>(value), &p),
               "GetTensorMutableData");
  return static_cast<T*>(p);
}

std::string shape_str(const std::vector<int64_t>& s) {
  return sparseformer_cpu::dims_str(s.data(), static_cast<int>(s.size()));
}

struct Kernel {
  const OrtApi* api;
  int64_t block_size, layout_heads, q_offset;
  float scale, softcap;
  bool has_softcap;
  int64_t threads;
};

void* create_kernel(const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info) {
  auto get_int = [&](const char* name) {
    int64_t v = 0;
    check_status(api,
                 ort::fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*)>(
                     api, ort::kKernelInfoGetAttributeInt64)(info, name, &v),
                 (std::string("reading the int attribute ") + name + " of " + kOpName).c_str());
    return v;
  };
  auto get_float = [&](const char* name, bool* present) {
    float v = 0.0f;
    OrtStatus* s = ort::fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, float*)>(
        api, ort::kKernelInfoGetAttributeFloat)(info, name, &v);
    *present = s == nullptr;
    if (s != nullptr) ort::fn<void (*)(OrtStatus*)>(api, ort::kReleaseStatus)(s);
    return v;
  };
  auto* k = new Kernel{api, get_int("block_size"), get_int("layout_heads"), get_int("q_offset"), 0.f, 0.f, false,
                       available_cpus()};
  bool has_scale = false;
  k->scale = get_float("scale", &has_scale);
  k->softcap = get_float("softcap", &k->has_softcap);
  if (!has_scale) {
    delete k;
    fail(kOpName, " needs the float attribute scale");
  }
  return k;
}

void compute(void* op_kernel, OrtKernelContext* ctx) {
  const Kernel& K = *static_cast<Kernel*>(op_kernel);
  const OrtApi* api = K.api;
  size_t n_in = 0, n_out = 0;
  check_status(api,
               ort::fn<OrtStatus* (*)(const OrtKernelContext*, size_t*)>(api, ort::kKernelContextGetInputCount)(
                   ctx, &n_in),
               "KernelContext_GetInputCount");
  check_status(api,
               ort::fn<OrtStatus* (*)(const OrtKernelContext*, size_t*)>(api, ort::kKernelContextGetOutputCount)(
                   ctx, &n_out),
               "KernelContext_GetOutputCount");
  auto input = [&](size_t i) -> const OrtValue* {
    if (i >= n_in) return nullptr;
    const OrtValue* v = nullptr;
    check_status(api,
                 ort::fn<OrtStatus* (*)(const OrtKernelContext*, size_t, const OrtValue**)>(
                     api, ort::kKernelContextGetInput)(ctx, i, &v),
                 "KernelContext_GetInput");
    return v;
  };
  const OrtValue *q = input(0), *k = input(1), *v = input(2);
  const auto qs = shape_of(api, q), ks = shape_of(api, k), vs = shape_of(api, v);
  SF_REQUIRE(qs.size() == 4, "q must be 4-D [B, H, Lq, D], got shape ", shape_str(qs));
  SF_REQUIRE(ks.size() == 4, "k must be 4-D [B, Hk, Lk, D], got shape ", shape_str(ks));
  SF_REQUIRE(vs.size() == 4, "v must be 4-D [B, Hk, Lk, Dv], got shape ", shape_str(vs));
  Problem p{};
  sparseformer_cpu::set_sizes(p, qs.data(), ks.data(), vs.data());
  p.bs = K.block_size;
  p.Hl = K.layout_heads;
  p.q_offset = K.q_offset;
  p.scale = K.scale;
  p.softcap = K.softcap;
  sparseformer_cpu::check_sizes(p, K.has_softcap);

  const OrtValue *row_ptr = input(3), *col_idx = input(4), *mask_id = input(5), *masks = input(6);
  const auto rs = shape_of(api, row_ptr), cs = shape_of(api, col_idx), ms = shape_of(api, mask_id),
             ps = shape_of(api, masks);
  SF_REQUIRE(rs.size() == 1, "row_ptr must be 1-D, got shape ", shape_str(rs));
  SF_REQUIRE(cs.size() == 1, "col_idx must be 1-D, got shape ", shape_str(cs));
  SF_REQUIRE(ms.size() == 1, "mask_id must be 1-D, got shape ", shape_str(ms));
  SF_REQUIRE(ps.size() == 3, "masks must be 3-D [P, block_size, block_size], got shape ", shape_str(ps));
  sparseformer_cpu::set_layout_sizes(p, rs[0], cs[0], ms[0], ps.data());
  p.row_ptr = data_of<const int64_t>(api, row_ptr);
  p.col_idx = data_of<const int64_t>(api, col_idx);
  p.mask_id = data_of<const int64_t>(api, mask_id);
  p.masks = p.P > 0 ? data_of<const bool>(api, masks) : nullptr;
  sparseformer_cpu::check_layout(p);

  auto optional = [&](size_t i, const char* name, const std::vector<int64_t>& want) -> const OrtValue* {
    const OrtValue* t = input(i);
    if (t == nullptr) return nullptr;
    const auto s = shape_of(api, t);
    SF_REQUIRE(s == want, name, " must have shape ", shape_str(want), ", got ", shape_str(s));
    return t;
  };
  const OrtValue* lw = optional(7, "log_weight", {p.nnz});
  const OrtValue* sl = optional(8, "slopes", {p.H});
  const OrtValue* kpm = optional(9, "key_padding_mask", {p.B, p.Lk});
  p.log_weight = lw ? data_of<const double>(api, lw) : nullptr;
  p.slopes = sl ? data_of<const double>(api, sl) : nullptr;
  p.kpm = kpm ? data_of<const bool>(api, kpm) : nullptr;

  auto output = [&](size_t i, std::vector<int64_t> dims) -> float* {
    OrtValue* o = nullptr;
    check_status(api,
                 ort::fn<OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**)>(
                     api, ort::kKernelContextGetOutput)(ctx, i, dims.data(), dims.size(), &o),
                 "KernelContext_GetOutput");
    return o ? data_of<float>(api, o) : nullptr;
  };
  float* out = output(0, {p.B, p.H, p.Lq, p.Dv});
  std::vector<float> lse_scratch;
  float* lse = n_out > 1 ? output(1, {p.B, p.H, p.Lq}) : nullptr;
  if (lse == nullptr) {
    lse_scratch.resize(static_cast<size_t>(p.B * p.H * p.Lq));
    lse = lse_scratch.data();
  }
  sparseformer_cpu::forward_impl<float>(ThreadExec{K.threads}, p, data_of<const float>(api, q),
                                        data_of<const float>(api, k), data_of<const float>(api, v), out, lse);
}

ONNXTensorElementDataType input_type(const OrtCustomOp*, size_t i) {
  switch (i) {
    case 0:
    case 1:
    case 2:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case 3:
    case 4:
    case 5:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case 7:
    case 8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    default:  // 6 masks, 9 key_padding_mask
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }
}

OrtCustomOp make_op() {
  OrtCustomOp op{};
  op.version = ort::kApiVersion;
  op.CreateKernel = create_kernel;
  op.GetName = [](const OrtCustomOp*) { return kOpName; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return "CPUExecutionProvider"; };
  op.GetInputType = input_type;
  op.GetInputTypeCount = [](const OrtCustomOp*) { return kNumInputs; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return size_t{2}; };
  op.KernelCompute = compute;
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t i) {
    return i >= kFirstOptionalInput ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t i) {
    return i >= 1 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  return op;
}

const OrtCustomOp kOp = make_op();

}  // namespace

// The library's entry point, called by ONNX Runtime's RegisterCustomOpsLibrary: registers the
// sparseformer.ai domain with its one op on the session options.
extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                               const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(ort::kApiVersion);
  if (api == nullptr) return nullptr;  // cannot happen: every runtime since 1.13 serves version 13
  // One domain per call, never freed: the session options keep a pointer to it for their lifetime.
  OrtCustomOpDomain* domain = nullptr;
  using Create = OrtStatus* (*)(const char*, OrtCustomOpDomain**);
  if (OrtStatus* s = ort::fn<Create>(api, ort::kCreateCustomOpDomain)(kDomain, &domain)) return s;
  using Add = OrtStatus* (*)(OrtCustomOpDomain*, const OrtCustomOp*);
  if (OrtStatus* s = ort::fn<Add>(api, ort::kCustomOpDomainAdd)(domain, &kOp)) return s;
  using Register = OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*);
  return ort::fn<Register>(api, ort::kAddCustomOpDomain)(options, domain);
}
