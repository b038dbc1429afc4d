// Our own declarations of the part of cuBLASLt (cuBLAS 13, CUDA 13) that the CUDA backend
// calls, so the backend compiles where cuBLAS's headers are absent. libcublasLt.so.13 is
// loaded at run time (loader.h) and reached only through the BlasLtApi table below.
//
// Values and prototypes are taken from cublasLt.h and cublas_api.h (read at CUDA 12.6,
// cuBLAS 12.6.4) and compared with cuBLAS 13.0-13.2 (generated bindings of those headers):
// none of what is declared here changed. cuBLAS 13 did change other things: the matrix layout
// and preference descriptors grew (their "Opaque" structs, which is why they stay incomplete
// here: cuBLASLt allocates them in ...Create), CUBLASLT_MATMUL_DESC_ATOMIC_SYNC_* (27-30) were
// removed, and the soname is .13, whose ABI is not .12's; the loader takes only .13.
// scripts/device/check_api.cc asserts, against the real headers, that all of this matches.
//
// cudaDataType_t is the CUDA runtime's own (library_types.h), the same type as the real one.
// cublasLtHandle_t uses cuBLASLt's own global struct tag, so it is the real type too. The
// real descriptor structs are anonymous C structs, which can't be forward-declared: ours are
// our own incomplete types, pointer-for-pointer the same in every call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>  // cudaStream_t
#include <library_types.h>     // cudaDataType_t

struct cublasLtContext;

namespace vgg::cuda {

typedef ::cublasLtContext* cublasLtHandle_t;
struct cublasLtMatmulDescOpaque_t;
struct cublasLtMatrixLayoutOpaque_t;
struct cublasLtMatmulPreferenceOpaque_t;
typedef cublasLtMatmulDescOpaque_t* cublasLtMatmulDesc_t;
typedef cublasLtMatrixLayoutOpaque_t* cublasLtMatrixLayout_t;
typedef cublasLtMatmulPreferenceOpaque_t* cublasLtMatmulPreference_t;

// Semi-opaque: returned by cublasLtMatmulAlgoGetHeuristic, passed back to cublasLtMatmul.
struct cublasLtMatmulAlgo_t {
  std::uint64_t data[8];
};

enum cublasStatus_t : int {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
  CUBLAS_STATUS_LICENSE_ERROR = 16,
};

enum cublasComputeType_t : int {
  CUBLAS_COMPUTE_16F = 64,
  CUBLAS_COMPUTE_32F = 68,
  CUBLAS_COMPUTE_32F_PEDANTIC = 69,
  CUBLAS_COMPUTE_32F_FAST_16F = 74,
  CUBLAS_COMPUTE_32F_FAST_16BF = 75,
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
};

enum cublasOperation_t : int {
  CUBLAS_OP_N = 0,
  CUBLAS_OP_T = 1,
  CUBLAS_OP_C = 2,
};

// The value each attribute takes through cublasLtMatmulDescSetAttribute, and its size.
enum cublasLtMatmulDescAttributes_t : int {
  CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,  // int32_t, cublasComputeType_t
  CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,    // int32_t, cudaDataType_t of alpha and beta
  CUBLASLT_MATMUL_DESC_POINTER_MODE = 2,  // int32_t, default host
  CUBLASLT_MATMUL_DESC_TRANSA = 3,        // int32_t, cublasOperation_t, default CUBLAS_OP_N
  CUBLASLT_MATMUL_DESC_TRANSB = 4,        // int32_t, cublasOperation_t, default CUBLAS_OP_N
  CUBLASLT_MATMUL_DESC_EPILOGUE = 7,      // uint32_t, cublasLtEpilogue_t, default DEFAULT
  CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,  // const void* (device), one per row of D
  CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,  // int32_t, cudaDataType_t; default -1: D's type
};

enum cublasLtEpilogue_t : int {
  CUBLASLT_EPILOGUE_DEFAULT = 1,
  CUBLASLT_EPILOGUE_RELU = 2,
  CUBLASLT_EPILOGUE_BIAS = 4,       // bias broadcast along D's columns, added before the rest
  CUBLASLT_EPILOGUE_RELU_BIAS = 6,  // RELU | BIAS: bias, then ReLU
  CUBLASLT_EPILOGUE_GELU = 32,
  CUBLASLT_EPILOGUE_GELU_BIAS = 36,
};

enum cublasLtMatmulPreferenceAttributes_t : int {
  CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,          // uint32_t
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,  // uint64_t, default 0: no workspace
};

// cublasLt.h: 96 bytes on LP64 (algo 0, workspaceSize 64, state 72, wavesCount 76).
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  std::size_t workspaceSize;
  cublasStatus_t state;  // the other fields hold only when this is CUBLAS_STATUS_SUCCESS
  float wavesCount;
  int reserved[4];
};

// One member per C function, each typed as its real prototype.
struct BlasLtApi {
  cublasStatus_t (*cublasLtCreate)(cublasLtHandle_t* lightHandle);
  cublasStatus_t (*cublasLtDestroy)(cublasLtHandle_t lightHandle);
  std::size_t (*cublasLtGetVersion)();  // major*10000 + minor*100 + patch, as CUBLAS_VERSION
  const char* (*cublasLtGetStatusString)(cublasStatus_t status);

  cublasStatus_t (*cublasLtMatmulDescCreate)(cublasLtMatmulDesc_t* matmulDesc,
                                             cublasComputeType_t computeType,
                                             cudaDataType_t scaleType);
  cublasStatus_t (*cublasLtMatmulDescSetAttribute)(cublasLtMatmulDesc_t matmulDesc,
                                                   cublasLtMatmulDescAttributes_t attr,
                                                   const void* buf, std::size_t sizeInBytes);
  cublasStatus_t (*cublasLtMatmulDescDestroy)(cublasLtMatmulDesc_t matmulDesc);

  // Column-major by default: ld is the stride between columns, in elements.
  cublasStatus_t (*cublasLtMatrixLayoutCreate)(cublasLtMatrixLayout_t* matLayout,
                                               cudaDataType_t type, std::uint64_t rows,
                                               std::uint64_t cols, std::int64_t ld);
  cublasStatus_t (*cublasLtMatrixLayoutDestroy)(cublasLtMatrixLayout_t matLayout);

  cublasStatus_t (*cublasLtMatmulPreferenceCreate)(cublasLtMatmulPreference_t* pref);
  cublasStatus_t (*cublasLtMatmulPreferenceSetAttribute)(cublasLtMatmulPreference_t pref,
                                                         cublasLtMatmulPreferenceAttributes_t attr,
                                                         const void* buf, std::size_t sizeInBytes);
  cublasStatus_t (*cublasLtMatmulPreferenceDestroy)(cublasLtMatmulPreference_t pref);

  cublasStatus_t (*cublasLtMatmulAlgoGetHeuristic)(
      cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
      cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc,
      cublasLtMatrixLayout_t Ddesc, cublasLtMatmulPreference_t preference,
      int requestedAlgoCount, cublasLtMatmulHeuristicResult_t* heuristicResultsArray,
      int* returnAlgoCount);
  // D = alpha * op(A) * op(B) + beta * C, then the epilogue; alpha and beta are host pointers
  // unless CUBLASLT_MATMUL_DESC_POINTER_MODE says otherwise.
  cublasStatus_t (*cublasLtMatmul)(
      cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void* alpha,
      const void* A, cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
      const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
      cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
      std::size_t workspaceSizeInBytes, cudaStream_t stream);
};

// Every BlasLtApi member, in order: the loader resolves these names, check_api.cc checks them.
#define VGG_CUDA_BLASLT_API(X)                                                               \
  X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetVersion) X(cublasLtGetStatusString)      \
  X(cublasLtMatmulDescCreate) X(cublasLtMatmulDescSetAttribute) X(cublasLtMatmulDescDestroy) \
  X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy)                               \
  X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceSetAttribute)                  \
  X(cublasLtMatmulPreferenceDestroy) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmul)

}  // namespace vgg::cuda
