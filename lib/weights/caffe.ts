import * as protobuf from 'protobufjs';
import { VggError } from '../errors';
import { elementCount, floatsOf, narrowDoubles, toTorchvision, type Converted, type Layer } from './layers';

/**
 * Reads a Caffe `.caffemodel`: a NetParameter with V1 layers (`layers`, an enum type, 4-D
 * blobs; the 2014 VGG release) or V2 layers (`layer`, a string type, BlobShape). Only the
 * fields a VGG needs are declared, field numbers as in BVLC's caffe.proto. The packed
 * `repeated float data` is declared as `bytes`, its identical wire form, so that a blob is a
 * view of the file rather than an array of JS numbers (8 bytes each, 1 GB for VGG16).
 */
const CAFFE_PROTO = `
syntax = "proto2";
package caffe;
message BlobShape { repeated int64 dim = 1 [packed = true]; }
message BlobProto {
  optional BlobShape shape = 7;
  optional bytes data = 5;
  optional bytes double_data = 8;
  optional int64 num = 1; optional int64 channels = 2; optional int64 height = 3; optional int64 width = 4;
}
message NetParameter { optional string name = 1; repeated LayerParameter layer = 100; repeated V1LayerParameter layers = 2; }
message LayerParameter {
  optional string name = 1; optional string type = 2; repeated string bottom = 3; repeated string top = 4; repeated BlobProto blobs = 7;
  optional BatchNormParameter batch_norm_param = 139; optional ConvolutionParameter convolution_param = 106;
  optional InnerProductParameter inner_product_param = 117; optional LRNParameter lrn_param = 118;
  optional PoolingParameter pooling_param = 121; optional ReLUParameter relu_param = 123; optional ScaleParameter scale_param = 142;
}
message V1LayerParameter {
  repeated string bottom = 2; repeated string top = 3; optional string name = 4; optional int32 type = 5; repeated BlobProto blobs = 6;
  optional ConvolutionParameter convolution_param = 10; optional InnerProductParameter inner_product_param = 17;
  optional LRNParameter lrn_param = 18; optional PoolingParameter pooling_param = 19; optional ReLUParameter relu_param = 30;
}
message ConvolutionParameter {
  optional uint32 num_output = 1; repeated uint32 pad = 3; repeated uint32 kernel_size = 4; optional uint32 group = 5 [default = 1];
  repeated uint32 stride = 6; optional uint32 pad_h = 9; optional uint32 pad_w = 10; optional uint32 stride_h = 13; optional uint32 stride_w = 14;
  repeated uint32 dilation = 18;
}
message InnerProductParameter { optional uint32 num_output = 1; optional int32 axis = 5 [default = 1]; optional bool transpose = 6; }
message LRNParameter {
  optional uint32 local_size = 1 [default = 5]; optional float alpha = 2 [default = 1]; optional float beta = 3 [default = 0.75];
  optional int32 norm_region = 4; optional float k = 5 [default = 1];
}
message PoolingParameter {
  optional int32 pool = 1; optional uint32 kernel_size = 2; optional uint32 stride = 3 [default = 1]; optional uint32 pad = 4;
  optional uint32 kernel_h = 5; optional uint32 kernel_w = 6; optional uint32 stride_h = 7; optional uint32 stride_w = 8;
  optional bool global_pooling = 12;
}
message ReLUParameter { optional float negative_slope = 1; }
message BatchNormParameter { optional float eps = 3 [default = 1e-5]; }
message ScaleParameter { optional int64 axis = 1 [default = 1]; optional bool bias_term = 4; }
`;

/** V1LayerParameter.LayerType values, named as V2 names the same layers. */
const V1_TYPES: Record<number, string> = {
  1: 'Accuracy', 4: 'Convolution', 5: 'Data', 6: 'Dropout', 8: 'Flatten', 9: 'HDF5Data', 12: 'ImageData', 14: 'InnerProduct',
  15: 'LRN', 17: 'Pooling', 18: 'ReLU', 20: 'Softmax', 21: 'SoftmaxWithLoss', 22: 'Split', 24: 'WindowData', 29: 'MemoryData', 32: 'DummyData',
  3: 'Concat', 25: 'Eltwise', 36: 'Silence', 39: 'Deconvolution',
};
const INPUTS = new Set(['Data', 'Input', 'ImageData', 'MemoryData', 'HDF5Data', 'WindowData', 'DummyData']);
/** Layers after the classifier that read the labels too; inference has no use for them. */
const TRAINING = new Set(['SoftmaxWithLoss', 'Accuracy', 'Silence']);
const PASS = new Set(['ReLU', 'Dropout', 'Flatten', 'Softmax']);

interface Blob { shape?: { dim: number[] }; data?: Uint8Array; double_data?: Uint8Array; num?: number; channels?: number; height?: number; width?: number }
interface ConvParam { num_output?: number; pad: number[]; kernel_size: number[]; group?: number; stride: number[]; pad_h?: number; pad_w?: number; stride_h?: number; stride_w?: number; dilation: number[] }
interface PoolParam { pool?: number; kernel_size?: number; stride?: number; pad?: number; kernel_h?: number; kernel_w?: number; stride_h?: number; stride_w?: number; global_pooling?: boolean }
interface CaffeLayer {
  name?: string; type?: string | number; bottom: string[]; top: string[]; blobs: Blob[];
  convolution_param?: ConvParam; inner_product_param?: { axis: number; transpose?: boolean };
  lrn_param?: { local_size?: number; alpha?: number; beta?: number; norm_region?: number; k?: number };
  pooling_param?: PoolParam; relu_param?: { negative_slope?: number };
  batch_norm_param?: { eps?: number }; scale_param?: { axis?: number; bias_term?: boolean };
}

let netType: protobuf.Type | undefined;

/** Whether the bytes decode as a NetParameter with layers (Caffe has no magic number). */
export function decodeCaffe(bytes: Uint8Array): { layers: CaffeLayer[]; version: 1 | 2 } | undefined {
  netType ??= protobuf.parse(CAFFE_PROTO, { keepCase: true }).root.lookupType('caffe.NetParameter');
  let net: { layer: CaffeLayer[]; layers: CaffeLayer[] };
  try {
    // Plain objects holding only the fields the file sets (decode's messages show defaults for the rest).
    net = netType.toObject(netType.decode(bytes), { longs: Number, arrays: true }) as typeof net;
  } catch {
    return undefined;
  }
  if (net.layer.length) return { layers: net.layer, version: 2 };
  if (net.layers.length) return { layers: net.layers, version: 1 };
  return undefined;
}

/** A decoded caffemodel as torchvision tensors; the Caffe release's weights expect BGR, mean-subtracted 0-255 input. */
/**
 * The caffemodel's layers as torchvision tensors. With `ownBytes` (the file was read into memory
 * of vggnet's own, not mapped), unaligned blobs are aligned in place instead of copied.
 */
export function convertCaffe(net: { layers: CaffeLayer[]; version: 1 | 2 }, source: string, ownBytes = false): Converted {
  const container = `Caffe V${net.version} caffemodel`;
  const fail = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${source} (${container}): ${why}`);
  if (ownBytes) for (const l of net.layers) for (const b of l.blobs) if (b.data) b.data = aligned(b.data);
  const out: Layer[] = [];
  let current: string | undefined;
  for (const [i, l] of net.layers.entries()) {
    const type = typeof l.type === 'number' ? V1_TYPES[l.type] ?? `V1 layer type ${l.type}` : l.type ?? '(no type)';
    const name = l.name || `#${i}`;
    const what = `layer ${name} (${type})`;
    if (INPUTS.has(type)) {
      current = l.top[0];
      continue;
    }
    if (TRAINING.has(type)) continue;
    // A VGG is one chain: every layer reads what the one before wrote (ReLU in place).
    if (l.bottom.length !== 1 || l.top.length !== 1 || (current !== undefined && l.bottom[0] !== current)) {
      throw fail(`${what} reads [${l.bottom.join(', ')}] and writes [${l.top.join(', ')}] after a layer that wrote ${current ?? 'the input'}; a VGG is a single chain of layers, not a network with branches`);
    }
    current = l.top[0];
    const layer = convertLayer(l, type, name, what, fail);
    if (layer === 'scale') {
      const bn = out[out.length - 1];
      if (bn?.kind !== 'bn') throw fail(`${what} does not follow a BatchNorm layer; vggnet reads Scale only as batch norm's gamma and beta`);
      readScale(l, bn, what, fail);
    } else if (layer) {
      out.push(layer);
    }
  }
  return toTorchvision(out, source, container, 'caffe');
}

function convertLayer(l: CaffeLayer, type: string, name: string, what: string, fail: (why: string) => VggError): Layer | 'scale' | undefined {
  switch (type) {
    case 'Convolution': {
      const p = l.convolution_param;
      const weight = blob(l, 0, 4, what, fail);
      const k = weight.shape[2];
      const pad = p?.pad_h ?? p?.pad[0] ?? 0;
      const stride = p?.stride_h ?? p?.stride[0] ?? 1;
      const odd = p && ((p.group ?? 1) !== 1 || stride !== 1 || (p.stride_w ?? stride) !== stride || (p.pad_w ?? pad) !== pad || p.dilation.some((d) => d !== 1));
      if (odd || pad !== (k - 1) / 2) throw fail(`${what} has group ${p?.group}, stride ${stride}, padding ${pad}, dilation [${p?.dilation}]; a VGG convolution has stride 1, padding ${(k - 1) / 2}, no groups or dilation`);
      return { kind: 'conv', name, weight, bias: l.blobs.length > 1 ? blob(l, 1, 1, what, fail).data : null };
    }
    case 'InnerProduct': {
      if (l.inner_product_param?.transpose) throw fail(`${what} stores its weights transposed (transpose: true), which vggnet does not read`);
      return { kind: 'fc', name, weight: blob(l, 0, 2, what, fail), bias: l.blobs.length > 1 ? blob(l, 1, 1, what, fail).data : null };
    }
    case 'Pooling': {
      const p = l.pooling_param;
      const kernel = p?.kernel_h ?? p?.kernel_size;
      const stride = p?.stride_h ?? p?.stride ?? 1;
      const ok = p && (p.pool ?? 0) === 0 && kernel === 2 && (p.kernel_w ?? kernel) === 2 && stride === 2 && (p.stride_w ?? stride) === 2 && !p.pad && !p.global_pooling;
      if (!ok) throw fail(`${what} is not a 2x2 max pool with stride 2 (pool ${p?.pool ?? 0}, kernel ${kernel}, stride ${stride}, pad ${p?.pad ?? 0})`);
      return { kind: 'pool', name };
    }
    case 'LRN': {
      // caffe.proto's defaults: the paper's LRN sets alpha and k explicitly.
      const { local_size: size = 5, alpha = 1, beta = 0.75, k = 1, norm_region: region = 0 } = l.lrn_param ?? {};
      const near = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.abs(b);
      if (size !== 5 || !near(alpha, 1e-4) || !near(beta, 0.75) || !near(k, 2) || region !== 0) {
        throw fail(`${what} has local_size ${size}, alpha ${alpha}, beta ${beta}, k ${k}; vggnet's LRN is the paper's: across channels, size 5, alpha 1e-4, beta 0.75, k 2`);
      }
      return { kind: 'lrn', name };
    }
    case 'BatchNorm': {
      // Caffe keeps running sums and their weight: the statistics are the first two divided by the third.
      if (l.blobs.length !== 3) throw fail(`${what} has ${l.blobs.length} blobs, expected mean, variance and their scale factor`);
      const [mean, variance] = [0, 1].map((b) => blob(l, b, 1, what, fail).data);
      const factor = blob(l, 2, 1, what, fail).data;
      if (factor.length !== 1) throw fail(`${what}'s third blob has ${factor.length} values, expected one scale factor`);
      const f = factor[0] === 0 ? 0 : 1 / factor[0];
      const scaled = (v: Float32Array) => (f === 1 ? v : v.map((x) => x * f));
      const ones = new Float32Array(mean.length).fill(1);
      return { kind: 'bn', name, mean: scaled(mean), variance: scaled(variance), gamma: ones, beta: new Float32Array(mean.length), eps: l.batch_norm_param?.eps ?? 1e-5 };
    }
    case 'Scale':
      return 'scale';
    case 'ReLU':
      if (l.relu_param?.negative_slope) throw fail(`${what} is a leaky ReLU (negative_slope ${l.relu_param.negative_slope}); a VGG's is plain`);
      return undefined;
    default:
      if (PASS.has(type)) return undefined;
      throw fail(`found ${what}, which a VGG does not have (it has Convolution, ReLU, Pooling, LRN, BatchNorm/Scale, InnerProduct, Dropout, Softmax)`);
  }
}

function readScale(l: CaffeLayer, bn: Extract<Layer, { kind: 'bn' }>, what: string, fail: (why: string) => VggError): void {
  if ((l.scale_param?.axis ?? 1) !== 1) throw fail(`${what} scales along axis ${l.scale_param!.axis}, expected the channels (1)`);
  bn.gamma = blob(l, 0, 1, what, fail).data;
  if (l.blobs.length > 1) bn.beta = blob(l, 1, 1, what, fail).data;
  if (bn.gamma.length !== bn.mean.length || bn.beta.length !== bn.mean.length) throw fail(`${what} has ${bn.gamma.length} scales for ${bn.mean.length} channels`);
}

/**
 * Blob `index` of a layer with `rank` dimensions: V2 blobs have a BlobShape, V1 blobs are 4-D
 * with leading ones (an fc weight is 1 x 1 x out x in), which are dropped.
 */
function blob(l: CaffeLayer, index: number, rank: number, what: string, fail: (why: string) => VggError) {
  const b = l.blobs[index];
  if (!b) throw fail(`${what} has ${l.blobs.length} blobs, expected blob ${index + 1}`);
  let dims = b.shape ? b.shape.dim : [b.num ?? 0, b.channels ?? 0, b.height ?? 0, b.width ?? 0];
  while (dims.length > rank && dims[0] === 1) dims = dims.slice(1);
  const count = elementCount(dims, `${what} blob ${index + 1}`, fail);
  if (dims.length !== rank) throw fail(`${what} blob ${index + 1} has shape [${dims.join(', ')}], expected ${rank} dimensions`);
  if (b.data?.length === 4 * count) return { data: floatsOf(b.data), shape: dims };
  if (b.double_data?.length === 8 * count) return { data: narrowDoubles(b.double_data), shape: dims };
  throw fail(`${what} blob ${index + 1} has shape [${dims.join(', ')}] (${count} values) but holds ${(b.data?.length ?? 0) / 4} floats and ${(b.double_data?.length ?? 0) / 8} doubles`);
}

/**
 * A blob's bytes moved back onto a 4-byte boundary over its own field's tag and length (already
 * decoded; at least 3 bytes for a blob of 128 bytes or more), so that its floats are a view
 * rather than a copy: a converted VGG16 then holds one copy of its weights, not two. Smaller
 * blobs stay where they are (and are copied).
 */
function aligned(bytes: Uint8Array): Uint8Array {
  const shift = bytes.byteOffset % 4;
  if (shift === 0 || bytes.length < 128) return bytes;
  const at = bytes.byteOffset - shift;
  new Uint8Array(bytes.buffer).copyWithin(at, bytes.byteOffset, bytes.byteOffset + bytes.length);
  return new Uint8Array(bytes.buffer, at, bytes.length);
}
