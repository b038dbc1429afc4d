// Asserts at compile time that native/cuda/dnn_api.h and blaslt_api.h declare what the real
// cuDNN 9 and cuBLASLt 13 headers declare: every enum value, the structs' layouts, and the
// type of every DnnApi/BlasLtApi member (our types mapped to the real ones). It compiles only
// where those headers are, the GPU machine's Python packages (nvidia/cudnn, nvidia/cu13):
//
//   INC=$(python3 -c 'import glob,nvidia; print(" ".join(sorted({"-I"+p.rsplit("/",1)[0]
//     for d in nvidia.__path__ for h in ("cudnn.h","cublasLt.h","cuda_runtime_api.h")
//     for p in glob.glob(d+"/*/include/"+h)})))')
//   g++ -std=c++17 $INC -I/usr/local/cuda/include scripts/device/check_api.cc -o /tmp/check_api
//   /tmp/check_api    # prints "api check ok", with the headers' versions
// (nvidia/cu13/include holds cublasLt.h and the CUDA runtime headers in CUDA 13's wheels;
// nvidia/cudnn/include holds cudnn.h. Only compiling matters: it links nothing of theirs.)
//
// A failure names the value, field or function that differs.
#include <cublasLt.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>

#include "../../native/cuda/blaslt_api.h"
#include "../../native/cuda/dnn_api.h"

namespace our = vgg::cuda;

// Map<T>::type: T with each of our types replaced by the real header's, through pointers,
// const and function types.
template <class T> struct Map { using type = T; };
template <class T> struct Map<T*> { using type = typename Map<T>::type*; };
template <class T> struct Map<const T> { using type = const typename Map<T>::type; };
template <class R, class... A> struct Map<R(A...)> {
  using type = typename Map<R>::type(typename Map<A>::type...);
};
#define MAP(T) \
  template <> struct Map<our::T> { using type = ::T; };

// cuDNN: the handles are the real types already (same global struct tags).
MAP(cudnnStatus_t)
MAP(cudnnDataType_t)
MAP(cudnnTensorFormat_t)
MAP(cudnnMathType_t)
MAP(cudnnNanPropagation_t)
MAP(cudnnDeterminism_t)
MAP(cudnnConvolutionMode_t)
MAP(cudnnConvolutionFwdAlgo_t)
MAP(cudnnActivationMode_t)
MAP(cudnnPoolingMode_t)
MAP(cudnnLRNMode_t)
MAP(cudnnConvolutionFwdAlgoPerf_t)
// cuBLASLt
MAP(cublasStatus_t)
MAP(cublasComputeType_t)
MAP(cublasOperation_t)
MAP(cublasLtMatmulDescAttributes_t)
MAP(cublasLtEpilogue_t)
MAP(cublasLtMatmulPreferenceAttributes_t)
MAP(cublasLtMatmulAlgo_t)
MAP(cublasLtMatmulHeuristicResult_t)
MAP(cublasLtMatmulDescOpaque_t)
MAP(cublasLtMatrixLayoutOpaque_t)
MAP(cublasLtMatmulPreferenceOpaque_t)

// Handles
#define SAME_TYPE(T) \
  static_assert(std::is_same<Map<our::T>::type, ::T>::value, "type " #T " differs");
SAME_TYPE(cudnnHandle_t)
SAME_TYPE(cudnnTensorDescriptor_t)
SAME_TYPE(cudnnFilterDescriptor_t)
SAME_TYPE(cudnnConvolutionDescriptor_t)
SAME_TYPE(cudnnActivationDescriptor_t)
SAME_TYPE(cudnnPoolingDescriptor_t)
SAME_TYPE(cudnnLRNDescriptor_t)
SAME_TYPE(cublasLtHandle_t)
SAME_TYPE(cublasLtMatmulDesc_t)
SAME_TYPE(cublasLtMatrixLayout_t)
SAME_TYPE(cublasLtMatmulPreference_t)

// Enums: the same size as the real enum, and each value the same.
#define SAME_SIZE(T) \
  static_assert(sizeof(our::T) == sizeof(::T), "size of " #T " differs");
#define SAME_VALUE(V)                                                      \
  static_assert(static_cast<long long>(our::V) == static_cast<long long>(::V), \
                "value of " #V " differs");

SAME_SIZE(cudnnStatus_t)
SAME_VALUE(CUDNN_STATUS_SUCCESS)
SAME_VALUE(CUDNN_STATUS_NOT_INITIALIZED)
SAME_VALUE(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH)
SAME_VALUE(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
SAME_VALUE(CUDNN_STATUS_BAD_PARAM)
SAME_VALUE(CUDNN_STATUS_NOT_SUPPORTED)
SAME_VALUE(CUDNN_STATUS_INTERNAL_ERROR)
SAME_VALUE(CUDNN_STATUS_EXECUTION_FAILED)
#ifdef CUDNN_STATUS_CATEGORY
static_assert(our::statusCategory(3002) == CUDNN_STATUS_CATEGORY(3002),
              "statusCategory differs from CUDNN_STATUS_CATEGORY");
#endif

SAME_SIZE(cudnnDataType_t)
SAME_VALUE(CUDNN_DATA_FLOAT)
SAME_VALUE(CUDNN_DATA_DOUBLE)
SAME_VALUE(CUDNN_DATA_HALF)
SAME_VALUE(CUDNN_DATA_INT8)
SAME_VALUE(CUDNN_DATA_INT32)
SAME_VALUE(CUDNN_DATA_UINT8)
SAME_VALUE(CUDNN_DATA_BFLOAT16)
SAME_VALUE(CUDNN_DATA_INT64)

SAME_SIZE(cudnnTensorFormat_t)
SAME_VALUE(CUDNN_TENSOR_NCHW)
SAME_VALUE(CUDNN_TENSOR_NHWC)
SAME_VALUE(CUDNN_TENSOR_NCHW_VECT_C)

SAME_SIZE(cudnnMathType_t)
SAME_VALUE(CUDNN_DEFAULT_MATH)
SAME_VALUE(CUDNN_TENSOR_OP_MATH)
SAME_VALUE(CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
SAME_VALUE(CUDNN_FMA_MATH)

SAME_SIZE(cudnnNanPropagation_t)
SAME_VALUE(CUDNN_NOT_PROPAGATE_NAN)
SAME_VALUE(CUDNN_PROPAGATE_NAN)

SAME_SIZE(cudnnDeterminism_t)
SAME_VALUE(CUDNN_NON_DETERMINISTIC)
SAME_VALUE(CUDNN_DETERMINISTIC)

SAME_SIZE(cudnnConvolutionMode_t)
SAME_VALUE(CUDNN_CONVOLUTION)
SAME_VALUE(CUDNN_CROSS_CORRELATION)

SAME_SIZE(cudnnConvolutionFwdAlgo_t)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_GEMM)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_DIRECT)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_FFT)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED)
SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_COUNT)

SAME_SIZE(cudnnActivationMode_t)
SAME_VALUE(CUDNN_ACTIVATION_SIGMOID)
SAME_VALUE(CUDNN_ACTIVATION_RELU)
SAME_VALUE(CUDNN_ACTIVATION_TANH)
SAME_VALUE(CUDNN_ACTIVATION_CLIPPED_RELU)
SAME_VALUE(CUDNN_ACTIVATION_ELU)
SAME_VALUE(CUDNN_ACTIVATION_IDENTITY)
SAME_VALUE(CUDNN_ACTIVATION_SWISH)

SAME_SIZE(cudnnPoolingMode_t)
SAME_VALUE(CUDNN_POOLING_MAX)
SAME_VALUE(CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING)
SAME_VALUE(CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING)
SAME_VALUE(CUDNN_POOLING_MAX_DETERMINISTIC)

SAME_SIZE(cudnnLRNMode_t)
SAME_VALUE(CUDNN_LRN_CROSS_CHANNEL_DIM1)

SAME_SIZE(cublasStatus_t)
SAME_VALUE(CUBLAS_STATUS_SUCCESS)
SAME_VALUE(CUBLAS_STATUS_NOT_INITIALIZED)
SAME_VALUE(CUBLAS_STATUS_ALLOC_FAILED)
SAME_VALUE(CUBLAS_STATUS_INVALID_VALUE)
SAME_VALUE(CUBLAS_STATUS_ARCH_MISMATCH)
SAME_VALUE(CUBLAS_STATUS_MAPPING_ERROR)
SAME_VALUE(CUBLAS_STATUS_EXECUTION_FAILED)
SAME_VALUE(CUBLAS_STATUS_INTERNAL_ERROR)
SAME_VALUE(CUBLAS_STATUS_NOT_SUPPORTED)
SAME_VALUE(CUBLAS_STATUS_LICENSE_ERROR)

SAME_SIZE(cublasComputeType_t)
SAME_VALUE(CUBLAS_COMPUTE_16F)
SAME_VALUE(CUBLAS_COMPUTE_32F)
SAME_VALUE(CUBLAS_COMPUTE_32F_PEDANTIC)
SAME_VALUE(CUBLAS_COMPUTE_32F_FAST_16F)
SAME_VALUE(CUBLAS_COMPUTE_32F_FAST_16BF)
SAME_VALUE(CUBLAS_COMPUTE_32F_FAST_TF32)

SAME_SIZE(cublasOperation_t)
SAME_VALUE(CUBLAS_OP_N)
SAME_VALUE(CUBLAS_OP_T)
SAME_VALUE(CUBLAS_OP_C)

SAME_SIZE(cublasLtMatmulDescAttributes_t)
SAME_VALUE(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE)
SAME_VALUE(CUBLASLT_MATMUL_DESC_SCALE_TYPE)
SAME_VALUE(CUBLASLT_MATMUL_DESC_POINTER_MODE)
SAME_VALUE(CUBLASLT_MATMUL_DESC_TRANSA)
SAME_VALUE(CUBLASLT_MATMUL_DESC_TRANSB)
SAME_VALUE(CUBLASLT_MATMUL_DESC_EPILOGUE)
SAME_VALUE(CUBLASLT_MATMUL_DESC_BIAS_POINTER)
SAME_VALUE(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE)

SAME_SIZE(cublasLtEpilogue_t)
SAME_VALUE(CUBLASLT_EPILOGUE_DEFAULT)
SAME_VALUE(CUBLASLT_EPILOGUE_RELU)
SAME_VALUE(CUBLASLT_EPILOGUE_BIAS)
SAME_VALUE(CUBLASLT_EPILOGUE_RELU_BIAS)
SAME_VALUE(CUBLASLT_EPILOGUE_GELU)
SAME_VALUE(CUBLASLT_EPILOGUE_GELU_BIAS)

SAME_SIZE(cublasLtMatmulPreferenceAttributes_t)
SAME_VALUE(CUBLASLT_MATMUL_PREF_SEARCH_MODE)
SAME_VALUE(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)

// Structs: size, alignment and every field's offset.
#define SAME_LAYOUT(T)                                                 \
  static_assert(sizeof(our::T) == sizeof(::T), "size of " #T " differs"); \
  static_assert(alignof(our::T) == alignof(::T), "alignment of " #T " differs");
#define SAME_FIELD(T, f)                                                         \
  static_assert(offsetof(our::T, f) == offsetof(::T, f), "offset of " #T "." #f " differs"); \
  static_assert(sizeof(our::T::f) == sizeof(::T::f), "size of " #T "." #f " differs");

SAME_LAYOUT(cudnnConvolutionFwdAlgoPerf_t)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, algo)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, status)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, time)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, memory)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, determinism)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, mathType)
SAME_FIELD(cudnnConvolutionFwdAlgoPerf_t, reserved)

SAME_LAYOUT(cublasLtMatmulAlgo_t)
SAME_FIELD(cublasLtMatmulAlgo_t, data)

SAME_LAYOUT(cublasLtMatmulHeuristicResult_t)
SAME_FIELD(cublasLtMatmulHeuristicResult_t, algo)
SAME_FIELD(cublasLtMatmulHeuristicResult_t, workspaceSize)
SAME_FIELD(cublasLtMatmulHeuristicResult_t, state)
SAME_FIELD(cublasLtMatmulHeuristicResult_t, wavesCount)
SAME_FIELD(cublasLtMatmulHeuristicResult_t, reserved)

// Functions: each table member, mapped, is exactly a pointer to the real function.
#define SAME_DNN_FUNCTION(name)                                                  \
  static_assert(std::is_same<Map<decltype(our::DnnApi::name)>::type, decltype(&::name)>::value, \
                "DnnApi::" #name " is not typed as the real " #name);
#define SAME_BLASLT_FUNCTION(name)                                                   \
  static_assert(std::is_same<Map<decltype(our::BlasLtApi::name)>::type, decltype(&::name)>::value, \
                "BlasLtApi::" #name " is not typed as the real " #name);
VGG_CUDA_DNN_API(SAME_DNN_FUNCTION)
VGG_CUDA_BLASLT_API(SAME_BLASLT_FUNCTION)

int main() {
  std::printf("api check ok (headers: cuDNN %d.%d.%d, cuBLAS %d.%d.%d)\n", CUDNN_MAJOR, CUDNN_MINOR,
              CUDNN_PATCHLEVEL, CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH);
  return 0;
}
