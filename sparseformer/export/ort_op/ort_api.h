// The few ONNX Runtime C API entries the custom-op library uses, declared here because the
// onnxruntime wheel ships no headers. Written for the stable C ABI: OrtApiBase, the OrtApi function
// table (append-only across releases, so an entry's slot never moves) and the OrtCustomOp struct as
// of API version 13 (ONNX Runtime 1.13; every later runtime, 1.32 included, accepts it).
//
// Only what block_sparse_attention.cpp calls is declared: each OrtApi entry by its slot (its index in
// the table) and its C signature. Types the library never looks into stay opaque.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

struct OrtStatus;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtApi;  // a table of function pointers, read through ort::fn below

// ONNX TensorProto element types (the subset used here).
enum ONNXTensorElementDataType : int {
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 = 7,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL = 9,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE = 11,
};

enum OrtMemType : int { OrtMemTypeDefault = 0 };

enum OrtCustomOpInputOutputCharacteristic : int { INPUT_OUTPUT_REQUIRED = 0, INPUT_OUTPUT_OPTIONAL = 1 };

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version) noexcept;
  const char* (*GetVersionString)() noexcept;
};

// A custom op's schema and kernel callbacks, version 13 layout (ORT reads no field past the version
// it is given).
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info);
  const char* (*GetName)(const OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const OrtCustomOp* op);
  ONNXTensorElementDataType (*GetInputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const OrtCustomOp* op);
  ONNXTensorElementDataType (*GetOutputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const OrtCustomOp* op);
  void (*KernelCompute)(void* op_kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* op_kernel);
  OrtCustomOpInputOutputCharacteristic (*GetInputCharacteristic)(const OrtCustomOp* op, size_t index);
  OrtCustomOpInputOutputCharacteristic (*GetOutputCharacteristic)(const OrtCustomOp* op, size_t index);
  OrtMemType (*GetInputMemoryType)(const OrtCustomOp* op, size_t index);
};

}  // extern "C"

namespace ort {

// The C API version this library asks for (OrtApiBase::GetApi) and declares OrtCustomOp for.
constexpr uint32_t kApiVersion = 13;

// Slots of the OrtApi entries used, with their signatures.
enum Slot : size_t {
  kCreateCustomOpDomain = 26,          // OrtStatus* (const char* domain, OrtCustomOpDomain** out)
  kCustomOpDomainAdd = 27,             // OrtStatus* (OrtCustomOpDomain*, const OrtCustomOp*)
  kAddCustomOpDomain = 28,             // OrtStatus* (OrtSessionOptions*, OrtCustomOpDomain*)
  kGetTensorMutableData = 51,          // OrtStatus* (OrtValue*, void** out)
  kGetDimensionsCount = 61,            // OrtStatus* (const OrtTensorTypeAndShapeInfo*, size_t* out)
  kGetDimensions = 62,                 // OrtStatus* (const OrtTensorTypeAndShapeInfo*, int64_t* dims, size_t n)
  kGetTensorTypeAndShape = 65,         // OrtStatus* (const OrtValue*, OrtTensorTypeAndShapeInfo** out)
  kKernelInfoGetAttributeFloat = 85,   // OrtStatus* (const OrtKernelInfo*, const char* name, float* out)
  kKernelInfoGetAttributeInt64 = 86,   // OrtStatus* (const OrtKernelInfo*, const char* name, int64_t* out)
  kKernelContextGetInputCount = 88,    // OrtStatus* (const OrtKernelContext*, size_t* out)
  kKernelContextGetOutputCount = 89,   // OrtStatus* (const OrtKernelContext*, size_t* out)
  kKernelContextGetInput = 90,         // OrtStatus* (const OrtKernelContext*, size_t i, const OrtValue** out)
  kKernelContextGetOutput = 91,        // OrtStatus* (OrtKernelContext*, size_t i, const int64_t* dims,
                                       //             size_t n, OrtValue** out)
  kReleaseStatus = 93,                 // void (OrtStatus*)
  kReleaseTensorTypeAndShapeInfo = 99, // void (OrtTensorTypeAndShapeInfo*)
};

template <typename Fn>
Fn fn(const OrtApi* api, Slot slot) {
  return reinterpret_cast<Fn>(reinterpret_cast<void* const*>(api)[slot]);
}

}  // namespace ort
