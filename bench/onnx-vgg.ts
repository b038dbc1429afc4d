// The same network and weights as an ONNX file, for onnxruntime-node: what torch.onnx.export
// writes for torchvision's VGG at 224x224 (Conv+Relu, MaxPool, Flatten, Gemm), dynamic batch.
// At 224x224 pool5 is already 7x7, so the adaptive average pool is the identity and is left out.
// The walk over the layers is shared by both precisions: fp32 here, int8 as QDQ in onnx-qdq.ts.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { openWeights } from '../lib/weights';
import { featureLayers } from '../lib/arch/topology';

/** The peer packages live in bench/peer (installed by the bench), not in vggnet's dependencies. */
export const PEER_DIR = path.resolve(__dirname, '../../bench/peer');
export const peerRequire = createRequire(path.join(PEER_DIR, 'package.json'));

/** onnx.TensorProto.DataType */
export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6 } as const;

export const ints = (name: string, values: number[]) => ({ name, type: 7 /* INTS */, ints: values });
export const int = (name: string, i: number) => ({ name, type: 2 /* INT */, i });
const float = (name: string, f: number) => ({ name, type: 1 /* FLOAT */, f });

/** The nodes and initializers of a graph as it is written. */
export class OnnxGraph {
  readonly nodes: object[] = [];
  readonly inits: object[] = [];

  init(name: string, dims: number[], dataType: number, data: ArrayBufferView): string {
    this.inits.push({ name, dims, dataType, rawData: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    return name;
  }

  node(opType: string, input: string[], output: string, attribute: object[] = []): string {
    this.nodes.push({ opType, input, output: [output], attribute });
    return output;
  }
}

/** How a precision writes the parts of the network that differ. */
export interface OnnxPrecision {
  /** Whether a Relu node follows each Conv and hidden Gemm (QDQ leaves it to the u8 clamp of the Q after it). */
  relu: boolean;
  /** The tensor a Conv, Gemm, MaxPool or Flatten reads for the activation `x`. */
  read(g: OnnxGraph, x: string): string;
  /** The activation `out` of a MaxPool or Flatten holds the same values as `x`. */
  same(out: string, x: string): void;
  /** The weight and bias inputs of a Conv or Gemm (output channels first in `dims`) that reads `x`. */
  params(g: OnnxGraph, layer: string, dims: number[], weight: Float32Array, bias: Float32Array, x: string): [string, string];
}

const FP32: OnnxPrecision = {
  relu: true,
  read: (_g, x) => x,
  same: () => {},
  params: (g, layer, dims, weight, bias) => [g.init(`${layer}.w`, dims, DT.FLOAT, weight), g.init(`${layer}.b`, [dims[0]], DT.FLOAT, bias)],
};

export async function writeVggOnnx(weightsFile: string, out: string, precision: OnnxPrecision = FP32): Promise<void> {
  const { onnx } = peerRequire('onnx-proto');
  const w = await openWeights(weightsFile);
  const g = new OnnxGraph();
  const p = precision;
  /** A Conv or Gemm named `layer`, with its Relu unless it is fc8; returns the activation it makes. */
  const linear = (op: 'Conv' | 'Gemm', layer: string, x: string, dims: number[], weight: Float32Array, bias: Float32Array, attrs: object[], relu: boolean) => {
    const [W, B] = p.params(g, layer, dims, weight, bias, x);
    const y = g.node(op, [p.read(g, x), W, B], relu && p.relu ? `${layer}.pre` : layer, attrs);
    return relu && p.relu ? g.node('Relu', [y], layer) : y;
  };
  let x = 'input';
  let conv = 0;
  for (const l of featureLayers(w.arch)) {
    if (l.kind === 'conv') {
      const c = w.convs[conv++];
      const pad = l.kernel === 3 ? 1 : 0;
      const attrs = [ints('kernel_shape', [l.kernel, l.kernel]), ints('pads', [pad, pad, pad, pad])];
      x = linear('Conv', l.name, x, [l.outC, l.inC, l.kernel, l.kernel], c.weight!, c.bias, attrs, true);
    } else if (l.kind === 'pool') {
      g.node('MaxPool', [p.read(g, x)], l.name, [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])]);
      p.same(l.name, x);
      x = l.name;
    } else {
      throw new Error('the ONNX peer has no LRN; benchmark a config without it');
    }
  }
  g.node('Flatten', [p.read(g, x)], 'flat', [int('axis', 1)]);
  p.same('flat', x);
  x = 'flat';
  const fcNames = ['fc6', 'fc7', 'fc8'];
  w.fc.forEach((fc, i) => {
    const outF = fc.bias.length;
    const attrs = [float('alpha', 1), float('beta', 1), int('transB', 1)];
    x = linear('Gemm', fcNames[i], x, [outF, fc.weight!.length / outF], fc.weight!, fc.bias, attrs, i < 2);
  });
  const dim = (v: number | string) => (typeof v === 'number' ? { dimValue: v } : { dimParam: v });
  const io = (name: string, shape: (number | string)[]) => ({ name, type: { tensorType: { elemType: DT.FLOAT, shape: { dim: shape.map(dim) } } } });
  const model = {
    irVersion: 7,
    opsetImport: [{ domain: '', version: 13 }],
    producerName: 'vggnet bench',
    graph: {
      name: 'vgg', node: g.nodes, initializer: g.inits,
      input: [io('input', ['n', 3, 224, 224])], output: [io('fc8', ['n', w.arch.classes])],
    },
  };
  const bytes: Uint8Array = onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  const tmp = `${out}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, out);
}
