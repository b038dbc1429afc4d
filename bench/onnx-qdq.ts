// The network as a statically quantized QDQ ONNX model, laid out as onnxruntime's own quantizer
// writes it (quantize_static, QuantFormat.QDQ, per_channel, QUInt8 activations, QInt8 weights), so
// that onnxruntime's graph optimizer fuses it into QLinearConv, QGemm and a u8 MaxPool:
// - each activation an operator reads passes through QuantizeLinear -> DequantizeLinear (u8,
//   per-tensor scale and zero point): the input with its measured min and max, every ReLU output
//   with [0, max]; a MaxPool or Flatten output shares its input's, as the quantizer's do;
// - the ReLUs are left out: the quantizer removes them too, as a u8 zero point of 0 clamps at 0;
// - weights are s8 per output channel, symmetric (scale max|w| / 127, zero point 0, axis 0), and
//   biases s32 with scale input scale x weight scale, each behind a DequantizeLinear;
// - fc8's output stays float32 (QGemm with a float output), as vggnet's does.
// The ranges are vggnet's own calibration (the same samples, the same maxima), so the two int8
// models differ in the engine only, except that vggnet keeps conv1_1's input in float32.
import * as fs from 'node:fs';
import { preprocess } from '../lib/images';
import type { Calibration } from '../lib/weights/calibration';
import { DT, int, peerRequire, writeVggOnnx, type OnnxPrecision } from './onnx-vgg';

interface Quant { scale: number; zeroPoint: number }

/** u8 parameters of a range, as the quantizer computes them: it always includes 0. */
function u8Quant(min: number, max: number): Quant {
  const lo = Math.min(min, 0), hi = Math.max(max, 0);
  const scale = hi > lo ? (hi - lo) / 255 : 1;
  return { scale, zeroPoint: Math.min(255, Math.max(0, Math.round(-lo / scale))) };
}

function qdqPrecision(calibration: Calibration, input: { min: number; max: number }): OnnxPrecision {
  const quant = new Map<string, Quant>([['input', u8Quant(input.min, input.max)]]);
  for (const [blob, max] of Object.entries(calibration.max)) quant.set(blob, u8Quant(0, max));
  const of = (x: string) => {
    const q = quant.get(x);
    if (!q) throw new Error(`no calibrated range for ${x}`);
    return q;
  };
  const read = new Set<string>();
  return {
    relu: false,
    read(g, x) {
      if (read.has(x)) throw new Error(`${x} is read twice; its Q and DQ would be written twice`);
      read.add(x);
      const { scale, zeroPoint } = of(x);
      const s = g.init(`${x}.scale`, [], DT.FLOAT, new Float32Array([scale]));
      const z = g.init(`${x}.zero_point`, [], DT.UINT8, new Uint8Array([zeroPoint]));
      return g.node('DequantizeLinear', [g.node('QuantizeLinear', [x, s, z], `${x}.q`), s, z], `${x}.dq`);
    },
    same(out, x) {
      quant.set(out, of(x));
    },
    params(g, layer, dims, weight, bias, x) {
      const outC = dims[0], per = weight.length / outC;
      const wq = new Int8Array(weight.length), ws = new Float32Array(outC);
      const bq = new Int32Array(outC), bs = new Float32Array(outC);
      for (let o = 0; o < outC; o++) {
        let m = 0;
        for (let i = o * per; i < (o + 1) * per; i++) m = Math.max(m, Math.abs(weight[i]));
        ws[o] = m > 0 ? m / 127 : 1;
        for (let i = o * per; i < (o + 1) * per; i++) wq[i] = Math.max(-127, Math.min(127, Math.round(weight[i] / ws[o])));
        bs[o] = of(x).scale * ws[o];
        bq[o] = Math.round(bias[o] / bs[o]);
      }
      const axis0 = [int('axis', 0)];
      const W = g.node('DequantizeLinear', [
        g.init(`${layer}.w_q`, dims, DT.INT8, wq), g.init(`${layer}.w_scale`, [outC], DT.FLOAT, ws),
        g.init(`${layer}.w_zero_point`, [outC], DT.INT8, new Int8Array(outC)),
      ], `${layer}.w`, axis0);
      const B = g.node('DequantizeLinear', [
        g.init(`${layer}.b_q`, [outC], DT.INT32, bq), g.init(`${layer}.b_scale`, [outC], DT.FLOAT, bs),
        g.init(`${layer}.b_zero_point`, [outC], DT.INT32, new Int32Array(outC)),
      ], `${layer}.b`, axis0);
      return [W, B];
    },
  };
}

/** The smallest and largest value of the samples as the model reads them (preprocessed). */
export async function inputRange(samples: string[]): Promise<{ min: number; max: number }> {
  let min = Infinity, max = -Infinity;
  for (const file of samples) {
    for (const v of (await preprocess(file)).data) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
  }
  return { min, max };
}

/** Writes the QDQ model with vggnet's calibrated ranges and the input's measured range. */
export function writeQdqOnnx(weightsFile: string, out: string, calibration: Calibration, input: { min: number; max: number }): Promise<void> {
  return writeVggOnnx(weightsFile, out, qdqPrecision(calibration, input));
}

/**
 * How many nodes of each type onnxruntime runs after its graph optimizations, read from the
 * optimized model it writes; a QDQ model it did not fuse still holds float Conv or Gemm nodes.
 */
export async function optimizedOps(model: string, optimized: string, threads: number): Promise<Record<string, number>> {
  const ort = peerRequire('onnxruntime-node');
  const { onnx } = peerRequire('onnx-proto');
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all', optimizedModelFilePath: optimized,
  });
  await session.release();
  const counts: Record<string, number> = {};
  for (const n of onnx.ModelProto.decode(fs.readFileSync(optimized)).graph.node) counts[n.opType] = (counts[n.opType] ?? 0) + 1;
  return counts;
}
