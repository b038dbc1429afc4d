import { strict as assert } from 'node:assert';
import { VggError } from '../../lib/errors';
import { calibratedBlobs, loadCalibration, type Calibration } from '../../lib/weights/calibration';
import { loadModel } from '../../lib/model';
import { openWeights } from '../../lib/weights';
import { fixture } from '../helpers';

/** Ranges float32 int8 scales cannot represent: refused with the layer named, not NaN outputs. */
describe('faults: absurd calibration ranges', function () {
  const D = fixture('D.weights.safetensors');
  let good: Calibration;
  before(async () => {
    const { arch } = await openWeights(D);
    good = { format: 'vggnet-calibration', version: 1, arch: arch.arch, cfg: arch.cfg, images: 1, max: Object.fromEntries(calibratedBlobs(arch).map((b) => [b, 8])) };
    loadCalibration(good, arch); // sane ranges pass
  });
  const withRanges = (ranges: Record<string, number>): Calibration => ({ ...good, max: { ...good.max, ...ranges } });
  const refused = (blob: string) => (e: unknown) => e instanceof VggError && e.code === 'E_ARG' && e.message.includes(blob);

  for (const [what, ranges, blob] of [
    ['1e308', { conv3_2: 1e308 }, 'conv3_2'],
    ['1e-300', { conv2_1: 1e-300 }, 'conv2_1'],
    ['above 1e30', { fc6: 2e30, fc7: 2e30 }, 'fc6'],
    ['below 1e-30', { conv5_3: 5e-31 }, 'conv5_3'],
    ['two neighbours whose scales\' ratio underflows', { conv1_1: 1e-20, conv1_2: 1e20 }, 'conv1_2'],
  ] as [string, Record<string, number>, string][]) {
    it(`a range of ${what} is E_ARG naming ${blob}`, async () => {
      await assert.rejects(loadModel(D, { precision: 'int8', calibration: withRanges(ranges), threads: 1 }), refused(blob));
    });
  }
});
