export { classify, DENSE_SCALES, type ClassifyOptions, type Prediction } from './classify';
export { extract, type ExtractOptions, type ExtractRecord, type ExtractSource, type ImageInput } from './extract';
export { calibrate, type CalibrateOptions } from './calibrate';
export { packWeights, type PackOptions, type PackResult } from './pack';
