// Our own declarations of the part of cuDNN 9's legacy API that the CUDA backend calls, so
// the backend compiles where cuDNN's headers are absent. libcudnn.so.9 is loaded at run time
// (loader.h) and reached only through the DnnApi table below.
//
// Every value and prototype is taken from cuDNN 9's split headers, read at 9.6.0:
//   cudnn_graph.h  handle, cudnnStatus_t, cudnnDataType_t, cudnnMathType_t,
//                  cudnnNanPropagation_t, cudnnTensorFormat_t, cudnnActivationMode_t,
//                  cudnnConvolutionMode_t, cudnnGetVersion/GetErrorString/Create/Destroy/SetStream
//   cudnn_ops.h    tensor, filter, pooling, activation and LRN descriptors and calls,
//                  cudnnDeterminism_t, cudnnConvolutionFwdAlgo_t
//   cudnn_cnn.h    convolution descriptor and calls, cudnnConvolutionFwdAlgoPerf_t
// scripts/device/check_api.cc compiles this file next to the real headers and asserts that
// each value, struct layout and function type is the same; run it when cuDNN changes.
//
// Differences from cuDNN 8 that matter here (so a cuDNN 8 library must not be used):
//   * cudnnStatus_t: 8 numbered errors 1..14 (BAD_PARAM = 3, NOT_SUPPORTED = 9); 9 uses
//     categories of a thousand (BAD_PARAM = 2000, NOT_SUPPORTED = 3000, ...), with finer codes
//     inside each category (statusCategory below).
//   * cudnnGetVersion(): 8 returns major*1000 + minor*100 + patch (8907); 9 returns
//     major*10000 + minor*100 + patch (90600).
//   * Unchanged from 8: cudnnConvolutionFwdAlgoPerf_t's layout, CUDNN_DATA_BFLOAT16 = 9,
//     the convolution algorithm numbers, and every prototype used here. cuDNN 9 marks the
//     filter/convolution/pooling/activation calls deprecated (they still work in 9.x).
//
// The handle structs use cuDNN's own tag names at global scope, exactly as the real headers
// declare them, so cudnnHandle_t and the descriptor types here are the very same types as the
// real ones. The enums are our own types with a fixed int underlying type (the real ones are
// anonymous C enums of the same size); pass them as they are.
#pragma once
#include <cstddef>
#include <cuda_runtime_api.h>  // cudaStream_t

struct cudnnContext;
struct cudnnTensorStruct;
struct cudnnFilterStruct;
struct cudnnConvolutionStruct;
struct cudnnActivationStruct;
struct cudnnPoolingStruct;
struct cudnnLRNStruct;

namespace vgg::cuda {

typedef ::cudnnContext* cudnnHandle_t;
typedef ::cudnnTensorStruct* cudnnTensorDescriptor_t;
typedef ::cudnnFilterStruct* cudnnFilterDescriptor_t;
typedef ::cudnnConvolutionStruct* cudnnConvolutionDescriptor_t;
typedef ::cudnnActivationStruct* cudnnActivationDescriptor_t;
typedef ::cudnnPoolingStruct* cudnnPoolingDescriptor_t;
typedef ::cudnnLRNStruct* cudnnLRNDescriptor_t;

// Any code cuDNN returns fits; cudnnGetErrorString gives the text for every one of them and
// cudnnGetLastErrorString the reason behind the latest failure. Only those we test are named.
enum cudnnStatus_t : int {
  CUDNN_STATUS_SUCCESS = 0,
  CUDNN_STATUS_NOT_INITIALIZED = 1001,
  CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH = 1002,
  CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED = 1008,
  CUDNN_STATUS_BAD_PARAM = 2000,
  CUDNN_STATUS_NOT_SUPPORTED = 3000,
  CUDNN_STATUS_INTERNAL_ERROR = 4000,
  CUDNN_STATUS_EXECUTION_FAILED = 5000,
};
// The category of a cuDNN 9 status: CUDNN_STATUS_NOT_SUPPORTED for 3000..3999, and so on
// (cuDNN's own CUDNN_STATUS_CATEGORY macro).
constexpr int statusCategory(int status) { return status / 1000 * 1000; }

enum cudnnDataType_t : int {
  CUDNN_DATA_FLOAT = 0,
  CUDNN_DATA_DOUBLE = 1,
  CUDNN_DATA_HALF = 2,
  CUDNN_DATA_INT8 = 3,
  CUDNN_DATA_INT32 = 4,
  CUDNN_DATA_UINT8 = 6,
  CUDNN_DATA_BFLOAT16 = 9,
  CUDNN_DATA_INT64 = 10,
};

enum cudnnTensorFormat_t : int {
  CUDNN_TENSOR_NCHW = 0,
  CUDNN_TENSOR_NHWC = 1,
  CUDNN_TENSOR_NCHW_VECT_C = 2,
};

enum cudnnMathType_t : int {
  CUDNN_DEFAULT_MATH = 0,
  CUDNN_TENSOR_OP_MATH = 1,
  CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION = 2,
  CUDNN_FMA_MATH = 3,
};

enum cudnnNanPropagation_t : int {
  CUDNN_NOT_PROPAGATE_NAN = 0,
  CUDNN_PROPAGATE_NAN = 1,
};

enum cudnnDeterminism_t : int {
  CUDNN_NON_DETERMINISTIC = 0,
  CUDNN_DETERMINISTIC = 1,
};

enum cudnnConvolutionMode_t : int {
  CUDNN_CONVOLUTION = 0,
  CUDNN_CROSS_CORRELATION = 1,
};

enum cudnnConvolutionFwdAlgo_t : int {
  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM = 0,
  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM = 1,
  CUDNN_CONVOLUTION_FWD_ALGO_GEMM = 2,
  CUDNN_CONVOLUTION_FWD_ALGO_DIRECT = 3,
  CUDNN_CONVOLUTION_FWD_ALGO_FFT = 4,
  CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING = 5,
  CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD = 6,
  CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED = 7,
  CUDNN_CONVOLUTION_FWD_ALGO_COUNT = 8,
};

enum cudnnActivationMode_t : int {
  CUDNN_ACTIVATION_SIGMOID = 0,
  CUDNN_ACTIVATION_RELU = 1,
  CUDNN_ACTIVATION_TANH = 2,
  CUDNN_ACTIVATION_CLIPPED_RELU = 3,
  CUDNN_ACTIVATION_ELU = 4,
  CUDNN_ACTIVATION_IDENTITY = 5,  // cudnnConvolutionBiasActivationForward takes it only with IMPLICIT_PRECOMP_GEMM
  CUDNN_ACTIVATION_SWISH = 6,
};

enum cudnnPoolingMode_t : int {
  CUDNN_POOLING_MAX = 0,
  CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING = 1,
  CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING = 2,
  CUDNN_POOLING_MAX_DETERMINISTIC = 3,
};

enum cudnnLRNMode_t : int {
  CUDNN_LRN_CROSS_CHANNEL_DIM1 = 0,
};

// cudnn_cnn.h: 48 bytes on LP64, memory at offset 16.
struct cudnnConvolutionFwdAlgoPerf_t {
  cudnnConvolutionFwdAlgo_t algo;
  cudnnStatus_t status;
  float time;  // milliseconds, measured by cudnnFindConvolutionForwardAlgorithmEx
  std::size_t memory;  // workspace bytes
  cudnnDeterminism_t determinism;
  cudnnMathType_t mathType;
  int reserved[3];
};

// One member per C function, each typed as its real prototype (parameters' top-level const,
// which is not part of a function's type, is left out).
struct DnnApi {
  std::size_t (*cudnnGetVersion)();
  const char* (*cudnnGetErrorString)(cudnnStatus_t status);
  void (*cudnnGetLastErrorString)(char* message, std::size_t max_size);  // new in cuDNN 9.0
  cudnnStatus_t (*cudnnCreate)(cudnnHandle_t* handle);
  cudnnStatus_t (*cudnnDestroy)(cudnnHandle_t handle);
  cudnnStatus_t (*cudnnSetStream)(cudnnHandle_t handle, cudaStream_t streamId);

  cudnnStatus_t (*cudnnCreateTensorDescriptor)(cudnnTensorDescriptor_t* tensorDesc);
  cudnnStatus_t (*cudnnSetTensor4dDescriptor)(cudnnTensorDescriptor_t tensorDesc,
                                              cudnnTensorFormat_t format, cudnnDataType_t dataType,
                                              int n, int c, int h, int w);
  cudnnStatus_t (*cudnnDestroyTensorDescriptor)(cudnnTensorDescriptor_t tensorDesc);

  cudnnStatus_t (*cudnnCreateFilterDescriptor)(cudnnFilterDescriptor_t* filterDesc);
  // Note the order: data type, then format (cudnnSetTensor4dDescriptor has them the other way).
  cudnnStatus_t (*cudnnSetFilter4dDescriptor)(cudnnFilterDescriptor_t filterDesc,
                                              cudnnDataType_t dataType, cudnnTensorFormat_t format,
                                              int k, int c, int h, int w);
  cudnnStatus_t (*cudnnDestroyFilterDescriptor)(cudnnFilterDescriptor_t filterDesc);

  cudnnStatus_t (*cudnnCreateConvolutionDescriptor)(cudnnConvolutionDescriptor_t* convDesc);
  cudnnStatus_t (*cudnnSetConvolution2dDescriptor)(cudnnConvolutionDescriptor_t convDesc, int pad_h,
                                                   int pad_w, int u, int v, int dilation_h,
                                                   int dilation_w, cudnnConvolutionMode_t mode,
                                                   cudnnDataType_t computeType);
  cudnnStatus_t (*cudnnSetConvolutionMathType)(cudnnConvolutionDescriptor_t convDesc,
                                               cudnnMathType_t mathType);
  cudnnStatus_t (*cudnnDestroyConvolutionDescriptor)(cudnnConvolutionDescriptor_t convDesc);

  cudnnStatus_t (*cudnnFindConvolutionForwardAlgorithmEx)(
      cudnnHandle_t handle, cudnnTensorDescriptor_t xDesc, const void* x,
      cudnnFilterDescriptor_t wDesc, const void* w, cudnnConvolutionDescriptor_t convDesc,
      cudnnTensorDescriptor_t yDesc, void* y, int requestedAlgoCount, int* returnedAlgoCount,
      cudnnConvolutionFwdAlgoPerf_t* perfResults, void* workSpace, std::size_t workSpaceSizeInBytes);
  cudnnStatus_t (*cudnnGetConvolutionForwardAlgorithm_v7)(
      cudnnHandle_t handle, cudnnTensorDescriptor_t srcDesc, cudnnFilterDescriptor_t filterDesc,
      cudnnConvolutionDescriptor_t convDesc, cudnnTensorDescriptor_t destDesc,
      int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults);
  cudnnStatus_t (*cudnnGetConvolutionForwardWorkspaceSize)(
      cudnnHandle_t handle, cudnnTensorDescriptor_t xDesc, cudnnFilterDescriptor_t wDesc,
      cudnnConvolutionDescriptor_t convDesc, cudnnTensorDescriptor_t yDesc,
      cudnnConvolutionFwdAlgo_t algo, std::size_t* sizeInBytes);
  cudnnStatus_t (*cudnnConvolutionForward)(
      cudnnHandle_t handle, const void* alpha, cudnnTensorDescriptor_t xDesc, const void* x,
      cudnnFilterDescriptor_t wDesc, const void* w, cudnnConvolutionDescriptor_t convDesc,
      cudnnConvolutionFwdAlgo_t algo, void* workSpace, std::size_t workSpaceSizeInBytes,
      const void* beta, cudnnTensorDescriptor_t yDesc, void* y);
  // y = act(alpha1 * conv(x) + alpha2 * z + bias)
  cudnnStatus_t (*cudnnConvolutionBiasActivationForward)(
      cudnnHandle_t handle, const void* alpha1, cudnnTensorDescriptor_t xDesc, const void* x,
      cudnnFilterDescriptor_t wDesc, const void* w, cudnnConvolutionDescriptor_t convDesc,
      cudnnConvolutionFwdAlgo_t algo, void* workSpace, std::size_t workSpaceSizeInBytes,
      const void* alpha2, cudnnTensorDescriptor_t zDesc, const void* z,
      cudnnTensorDescriptor_t biasDesc, const void* bias,
      cudnnActivationDescriptor_t activationDesc, cudnnTensorDescriptor_t yDesc, void* y);

  cudnnStatus_t (*cudnnCreateActivationDescriptor)(cudnnActivationDescriptor_t* activationDesc);
  cudnnStatus_t (*cudnnSetActivationDescriptor)(cudnnActivationDescriptor_t activationDesc,
                                                cudnnActivationMode_t mode,
                                                cudnnNanPropagation_t reluNanOpt, double coef);
  cudnnStatus_t (*cudnnDestroyActivationDescriptor)(cudnnActivationDescriptor_t activationDesc);

  cudnnStatus_t (*cudnnCreatePoolingDescriptor)(cudnnPoolingDescriptor_t* poolingDesc);
  cudnnStatus_t (*cudnnSetPooling2dDescriptor)(cudnnPoolingDescriptor_t poolingDesc,
                                               cudnnPoolingMode_t mode,
                                               cudnnNanPropagation_t maxpoolingNanOpt,
                                               int windowHeight, int windowWidth,
                                               int verticalPadding, int horizontalPadding,
                                               int verticalStride, int horizontalStride);
  cudnnStatus_t (*cudnnPoolingForward)(cudnnHandle_t handle, cudnnPoolingDescriptor_t poolingDesc,
                                       const void* alpha, cudnnTensorDescriptor_t xDesc,
                                       const void* x, const void* beta,
                                       cudnnTensorDescriptor_t yDesc, void* y);
  cudnnStatus_t (*cudnnDestroyPoolingDescriptor)(cudnnPoolingDescriptor_t poolingDesc);

  cudnnStatus_t (*cudnnCreateLRNDescriptor)(cudnnLRNDescriptor_t* normDesc);
  // n in [1, 16], k >= 1e-5, beta >= 0.01 (cudnn_ops.h's CUDNN_LRN_* limits)
  cudnnStatus_t (*cudnnSetLRNDescriptor)(cudnnLRNDescriptor_t normDesc, unsigned lrnN,
                                         double lrnAlpha, double lrnBeta, double lrnK);
  cudnnStatus_t (*cudnnLRNCrossChannelForward)(cudnnHandle_t handle, cudnnLRNDescriptor_t normDesc,
                                               cudnnLRNMode_t lrnMode, const void* alpha,
                                               cudnnTensorDescriptor_t xDesc, const void* x,
                                               const void* beta, cudnnTensorDescriptor_t yDesc,
                                               void* y);
  cudnnStatus_t (*cudnnDestroyLRNDescriptor)(cudnnLRNDescriptor_t lrnDesc);
};

// Every DnnApi member, in order: the loader resolves these names, check_api.cc checks them.
#define VGG_CUDA_DNN_API(X)                                                                   \
  X(cudnnGetVersion) X(cudnnGetErrorString) X(cudnnGetLastErrorString) X(cudnnCreate)         \
  X(cudnnDestroy) X(cudnnSetStream) X(cudnnCreateTensorDescriptor)                            \
  X(cudnnSetTensor4dDescriptor) X(cudnnDestroyTensorDescriptor) X(cudnnCreateFilterDescriptor) \
  X(cudnnSetFilter4dDescriptor) X(cudnnDestroyFilterDescriptor)                               \
  X(cudnnCreateConvolutionDescriptor) X(cudnnSetConvolution2dDescriptor)                      \
  X(cudnnSetConvolutionMathType) X(cudnnDestroyConvolutionDescriptor)                         \
  X(cudnnFindConvolutionForwardAlgorithmEx) X(cudnnGetConvolutionForwardAlgorithm_v7)         \
  X(cudnnGetConvolutionForwardWorkspaceSize) X(cudnnConvolutionForward)                       \
  X(cudnnConvolutionBiasActivationForward) X(cudnnCreateActivationDescriptor)                 \
  X(cudnnSetActivationDescriptor) X(cudnnDestroyActivationDescriptor)                         \
  X(cudnnCreatePoolingDescriptor) X(cudnnSetPooling2dDescriptor) X(cudnnPoolingForward)       \
  X(cudnnDestroyPoolingDescriptor) X(cudnnCreateLRNDescriptor) X(cudnnSetLRNDescriptor)       \
  X(cudnnLRNCrossChannelForward) X(cudnnDestroyLRNDescriptor)

}  // namespace vgg::cuda
