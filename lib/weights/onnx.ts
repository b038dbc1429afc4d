import * as protobuf from 'protobufjs';
import { VggError } from '../errors';
import { elementCount, floatsOf, narrowDoubles, toTorchvision, transpose2d, type Converted, type Layer } from './layers';
import { widen16 } from './safetensors';
import type { Tensor } from '../tensor';

/**
 * Reads an ONNX model's weights by walking its graph: the ONNX model zoo's VGGs (exported from
 * MXNet: vgg0_conv0_weight, Gemm with transB) and PyTorch's exports alike. The fields are
 * those of onnx.proto that a VGG needs; packed float arrays are declared `bytes` (the same
 * wire form) so that they are views of the file, not arrays of JS numbers.
 */
const ONNX_PROTO = `
syntax = "proto2";
package onnx;
message ModelProto { optional int64 ir_version = 1; optional string producer_name = 2; optional GraphProto graph = 7; }
message GraphProto { repeated NodeProto node = 1; repeated TensorProto initializer = 5; repeated ValueInfoProto input = 11; }
message ValueInfoProto { optional string name = 1; }
message NodeProto { repeated string input = 1; repeated string output = 2; optional string name = 3; optional string op_type = 4; repeated AttributeProto attribute = 5; optional string domain = 7; }
message AttributeProto { optional string name = 1; optional float f = 2; optional int64 i = 3; optional bytes s = 4; optional TensorProto t = 5; repeated int64 ints = 8; }
message TensorProto {
  repeated int64 dims = 1; optional int32 data_type = 2; optional bytes float_data = 4; optional string name = 8;
  optional bytes raw_data = 9; optional bytes double_data = 10; optional int32 data_location = 14;
}
`;

interface OnnxTensor { dims: number[]; data_type?: number; float_data?: Uint8Array; name?: string; raw_data?: Uint8Array; double_data?: Uint8Array; data_location?: number }
interface Attribute { name?: string; f?: number; i?: number; s?: Uint8Array; t?: OnnxTensor; ints: number[] }
interface OnnxNode { input: string[]; output: string[]; name?: string; op_type?: string; attribute: Attribute[]; domain?: string }
export interface OnnxModel { graph?: { node: OnnxNode[]; initializer: OnnxTensor[]; input: { name?: string }[] } }

const FLOAT = 1, FLOAT16 = 10, DOUBLE = 11;
/** Nodes that pass the activation on unchanged at inference (the avgpool of a 7x7 map is checked apart). */
const PASS = new Set(['Relu', 'Dropout', 'Flatten', 'Reshape', 'Identity', 'Softmax']);

let modelType: protobuf.Type | undefined;

/**
 * ONNX and Caffe files are both protobuf without a magic number; ONNX writers put ir_version
 * (field 1, a varint: tag byte 0x08) first, where a caffemodel starts with a string or a layer.
 */
export function decodeOnnx(bytes: Uint8Array): OnnxModel | undefined {
  if (bytes[0] !== 0x08) return undefined;
  modelType ??= protobuf.parse(ONNX_PROTO, { keepCase: true }).root.lookupType('onnx.ModelProto');
  try {
    // Plain objects holding only the fields the file sets (decode's messages show defaults for the rest).
    return modelType.toObject(modelType.decode(bytes), { longs: Number, arrays: true }) as OnnxModel;
  } catch {
    return undefined;
  }
}

export function convertOnnx(model: OnnxModel, source: string): Converted {
  const container = 'ONNX model';
  const fail = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${source} (${container}): ${why}`);
  const graph = model.graph;
  if (!graph || graph.node.length === 0) throw fail('the model has no graph nodes');
  const constants = new Map<string, OnnxTensor>();
  for (const t of graph.initializer) if (t.name) constants.set(t.name, t);
  const inputs = graph.input.map((i) => i.name ?? '').filter((n) => !constants.has(n));
  if (inputs.length !== 1) throw fail(`the graph has ${inputs.length} inputs besides its weights (${inputs.join(', ')}), expected one image batch`);

  const out: Layer[] = [];
  let current = inputs[0];
  for (const [index, node] of graph.node.entries()) {
    const op = node.op_type ?? '';
    const what = `node ${node.name || `#${index}`} (${op})`;
    if (op === 'Constant') {
      const value = node.attribute.find((a) => a.name === 'value')?.t;
      if (value && node.output[0]) constants.set(node.output[0], value);
      continue;
    }
    // A VGG is one chain: each node reads the activation the node before wrote, and weights.
    const activations = node.input.filter((name) => name !== '' && !constants.has(name));
    if (activations.length !== 1 || activations[0] !== current || node.output.length < 1) {
      throw fail(`${what} reads the activations [${activations.join(', ')}] after a node that wrote ${current}; a VGG is a single chain of nodes, not a graph with branches or merges`);
    }
    current = node.output[0];
    const weight = (i: number, dims: number) => tensorOf(constants.get(node.input[i]), `${what} input ${i + 1}`, dims, fail);
    const layer = convertNode(node, op, what, weight, fail);
    if (layer === 'bias') {
      const fc = out[out.length - 1];
      if (fc?.kind !== 'fc' || fc.bias) throw fail(`${what} adds to something other than a MatMul without bias`);
      const k = node.input.findIndex((name) => constants.has(name));
      fc.bias = weight(k, 1).data;
    } else if (layer) {
      out.push(layer);
    }
  }
  return toTorchvision(out, source, container, 'torchvision');
}

type WeightOf = (i: number, dims: number) => Tensor;

function convertNode(node: OnnxNode, op: string, what: string, weight: WeightOf, fail: (why: string) => VggError): Layer | 'bias' | undefined {
  const attr = (name: string) => node.attribute.find((a) => a.name === name);
  const ints = (name: string, fallback: number[]) => attr(name)?.ints ?? fallback;
  const int = (name: string, fallback: number) => attr(name)?.i ?? fallback;
  const float = (name: string, fallback: number) => attr(name)?.f ?? fallback;
  const all = (v: number[], x: number) => v.every((y) => y === x);
  const name = node.name || node.output[0];
  switch (op) {
    case 'Conv': {
      const w = weight(1, 4);
      const k = w.shape[2];
      const auto = attr('auto_pad')?.s;
      if (!all(ints('strides', [1]), 1) || !all(ints('dilations', [1]), 1) || int('group', 1) !== 1 || !all(ints('pads', [0]), (k - 1) / 2) || (auto && new TextDecoder().decode(auto) !== 'NOTSET')) {
        throw fail(`${what} has strides [${ints('strides', [1])}], pads [${ints('pads', [0])}], group ${int('group', 1)}; a VGG convolution has stride 1, padding ${(k - 1) / 2}, no groups or dilation`);
      }
      return { kind: 'conv', name, weight: w, bias: node.input[2] ? weight(2, 1).data : null };
    }
    case 'Gemm': {
      if (int('transA', 0) !== 0 || float('alpha', 1) !== 1 || float('beta', 1) !== 1) throw fail(`${what} has transA ${int('transA', 0)}, alpha ${float('alpha', 1)}, beta ${float('beta', 1)}, expected a plain fully connected layer`);
      const w = weight(1, 2);
      return { kind: 'fc', name, weight: int('transB', 0) ? w : transpose2d(w), bias: node.input[2] ? weight(2, 1).data : null };
    }
    case 'MatMul':
      return { kind: 'fc', name, weight: transpose2d(weight(1, 2)), bias: null };
    case 'Add':
      return 'bias';
    case 'MaxPool':
      if (!all(ints('kernel_shape', []), 2) || ints('kernel_shape', []).length !== 2 || !all(ints('strides', []), 2) || !all(ints('pads', [0]), 0)) {
        throw fail(`${what} has kernel [${ints('kernel_shape', [])}], strides [${ints('strides', [])}], pads [${ints('pads', [0])}], expected a 2x2 max pool with stride 2`);
      }
      return { kind: 'pool', name };
    case 'AveragePool':
      // PyTorch exports torchvision's AdaptiveAvgPool2d((7, 7)) of a 7x7 map as a 1x1 average: the identity.
      if (!all(ints('kernel_shape', []), 1) || !all(ints('strides', [1]), 1)) throw fail(`${what} averages over [${ints('kernel_shape', [])}]; only the identity 1x1 average of torchvision's export is a VGG's`);
      return undefined;
    case 'LRN': {
      const near = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.abs(b);
      if (int('size', 0) !== 5 || !near(float('alpha', 1e-4), 1e-4) || !near(float('beta', 0.75), 0.75) || !near(float('bias', 1), 2)) {
        throw fail(`${what} has size ${int('size', 0)}, alpha ${float('alpha', 1e-4)}, beta ${float('beta', 0.75)}, bias ${float('bias', 1)}; vggnet's LRN is the paper's: size 5, alpha 1e-4, beta 0.75, k 2`);
      }
      return { kind: 'lrn', name };
    }
    case 'BatchNormalization': {
      const [gamma, beta, mean, variance] = [1, 2, 3, 4].map((i) => weight(i, 1).data);
      return { kind: 'bn', name, gamma, beta, mean, variance, eps: float('epsilon', 1e-5) };
    }
    default:
      if (PASS.has(op) && !node.domain) return undefined;
      throw fail(`found ${what}, which a VGG does not have (it has Conv, Relu, MaxPool, LRN, BatchNormalization, Gemm, Dropout, Flatten, Softmax)`);
  }
}

/** An initializer or Constant as float32, its size checked against its dims before anything is read. */
function tensorOf(t: OnnxTensor | undefined, what: string, rank: number, fail: (why: string) => VggError): Tensor {
  if (!t) throw fail(`${what} is missing or is not a weight (an initializer or a Constant)`);
  if (t.data_location === 1) throw fail(`${what} (${t.name}) is stored in an external file; save the model with its weights inside (onnx.save with save_as_external_data=False)`);
  const shape = t.dims;
  if (shape.length !== rank) throw fail(`${what} (${t.name}) has shape [${shape.join(', ')}], expected ${rank} dimensions`);
  const count = elementCount(shape, `${what} (${t.name})`, fail);
  const raw = t.raw_data?.length ? t.raw_data : undefined;
  const sized = (bytes: Uint8Array | undefined, size: number) => bytes?.length === count * size ? bytes : undefined;
  let data: Float32Array | undefined;
  if (t.data_type === FLOAT) {
    const bytes = sized(raw ?? t.float_data, 4);
    data = bytes && floatsOf(bytes);
  } else if (t.data_type === DOUBLE) {
    const bytes = sized(raw ?? t.double_data, 8);
    data = bytes && narrowDoubles(bytes);
  } else if (t.data_type === FLOAT16) {
    const bytes = sized(raw, 2);
    data = bytes && widen16(new Uint16Array(bytes.slice().buffer), 'F16');
  } else {
    throw fail(`${what} (${t.name}) has ONNX data type ${t.data_type}, expected float, float16 or double`);
  }
  if (!data) throw fail(`${what} (${t.name}) has shape [${shape.join(', ')}] but its data is not ${count} values of its type`);
  return { data, shape };
}
