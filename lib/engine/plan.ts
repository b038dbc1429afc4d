import { FC6_WINDOW, featureLayers, hasClassifier, HEAD_BLOBS, lastWidth, LRN } from '../arch/topology';
import type { NativeFeatureOp, NativePlan } from '../native';
import { outScale, type Calibration } from '../weights/calibration';
import type { ModelWeights } from '../weights/open';

/** The network for the addon: every layer in order with its weights (and int8 ranges), already checked. */
export function buildPlan(weights: ModelWeights, calibration?: Calibration): Pick<NativePlan, 'lastC' | 'features' | 'fc' | 'headBlobs' | 'fc6Window'> {
  let conv = 0;
  const scale = (blob: string) => (calibration ? { outScale: outScale(calibration, blob) } : {});
  const features = featureLayers(weights.arch).map((l): NativeFeatureOp => {
    if (l.kind === 'pool') return { kind: 'pool' };
    if (l.kind === 'lrn') return { kind: 'lrn', ...LRN, ...scale(l.name) };
    return { kind: 'conv', kernel: l.kernel, inC: l.inC, outC: l.outC, ...weights.convs[conv++], ...scale(l.name) };
  });
  const c = lastWidth(weights.arch);
  // The addon always has a classifier. Without one, it gets a 1-wide head of zeros that no
  // caller can ask for (run refuses fc6...prob): C*49 multiply-adds a run, and no native changes.
  const zeros = (inF: number) => ({ weight: new Float32Array(inF), bias: new Float32Array(1) });
  const [fc6, fc7, fc8] = weights.fc.length ? weights.fc : [zeros(c * FC6_WINDOW * FC6_WINDOW), zeros(1), zeros(1)];
  const { fcHidden, classes } = hasClassifier(weights.arch) ? weights.arch : { fcHidden: 1, classes: 1 };
  return {
    lastC: c,
    features,
    fc: [
      { inF: c * FC6_WINDOW * FC6_WINDOW, outF: fcHidden, ...fc6, ...scale('fc6') },
      { inF: fcHidden, outF: fcHidden, ...fc7, ...scale('fc7') },
      { inF: fcHidden, outF: classes, ...fc8 },
    ],
    headBlobs: HEAD_BLOBS,
    fc6Window: FC6_WINDOW,
  };
}
