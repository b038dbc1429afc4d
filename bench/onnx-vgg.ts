// The same network and weights as an ONNX file, for onnxruntime-node: what torch.onnx.export
// writes for torchvision's VGG at 224x224 (Conv+Relu, MaxPool, Flatten, Gemm), dynamic batch.
// At 224x224 pool5 is already 7x7, so the adaptive average pool is the identity and is left out.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { openWeights } from '../lib/weights';
import { featureLayers } from '../lib/arch/topology';

/** The peer packages live in bench/peer (installed by the bench), not in vggnet's dependencies. */
export const PEER_DIR = path.resolve(__dirname, '../../bench/peer');
export const peerRequire = createRequire(path.join(PEER_DIR, 'package.json'));

const FLOAT = 1; // onnx.TensorProto.DataType.FLOAT

export async function writeVggOnnx(weightsFile: string, out: string): Promise<void> {
  const { onnx } = peerRequire('onnx-proto');
  const w = await openWeights(weightsFile);
  const nodes: object[] = [];
  const inits: object[] = [];
  const tensor = (name: string, dims: number[], data: Float32Array) => {
    inits.push({ name, dims, dataType: FLOAT, rawData: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    return name;
  };
  const ints = (name: string, values: number[]) => ({ name, type: 7 /* INTS */, ints: values });
  let x = 'input';
  let conv = 0;
  for (const l of featureLayers(w.arch)) {
    if (l.kind === 'conv') {
      const p = w.convs[conv++];
      const pad = l.kernel === 3 ? 1 : 0;
      const W = tensor(`${l.name}.w`, [l.outC, l.inC, l.kernel, l.kernel], p.weight!);
      const B = tensor(`${l.name}.b`, [l.outC], p.bias);
      nodes.push({ opType: 'Conv', input: [x, W, B], output: [`${l.name}.pre`], attribute: [ints('kernel_shape', [l.kernel, l.kernel]), ints('pads', [pad, pad, pad, pad])] });
      nodes.push({ opType: 'Relu', input: [`${l.name}.pre`], output: [l.name] });
    } else if (l.kind === 'pool') {
      nodes.push({ opType: 'MaxPool', input: [x], output: [l.name], attribute: [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])] });
    } else {
      throw new Error('the ONNX peer has no LRN; benchmark a config without it');
    }
    x = l.name;
  }
  nodes.push({ opType: 'Flatten', input: [x], output: ['flat'], attribute: [{ name: 'axis', type: 2 /* INT */, i: 1 }] });
  x = 'flat';
  const fcNames = ['fc6', 'fc7', 'fc8'];
  w.fc.forEach((p, i) => {
    const name = fcNames[i];
    const outF = p.bias.length;
    const W = tensor(`${name}.w`, [outF, p.weight!.length / outF], p.weight!);
    const B = tensor(`${name}.b`, [outF], p.bias);
    const y = i < 2 ? `${name}.pre` : name;
    nodes.push({ opType: 'Gemm', input: [x, W, B], output: [y], attribute: [{ name: 'transB', type: 2, i: 1 }] });
    if (i < 2) nodes.push({ opType: 'Relu', input: [y], output: [name] });
    x = name;
  });
  const dim = (v: number | string) => (typeof v === 'number' ? { dimValue: v } : { dimParam: v });
  const io = (name: string, shape: (number | string)[]) => ({ name, type: { tensorType: { elemType: FLOAT, shape: { dim: shape.map(dim) } } } });
  const model = {
    irVersion: 7,
    opsetImport: [{ domain: '', version: 13 }],
    producerName: 'vggnet bench',
    graph: {
      name: 'vgg', node: nodes, initializer: inits,
      input: [io('input', ['n', 3, 224, 224])], output: [io('fc8', ['n', w.arch.classes])],
    },
  };
  const bytes: Uint8Array = onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  const tmp = `${out}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, out);
}
