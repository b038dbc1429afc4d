export { classify, type ClassifyOptions, type Prediction } from './classify';
export { PAPER_SCALES, PROTOCOLS, type Protocol, type ProtocolOptions } from './protocols';
export { evaluate, type EvalOptions, type EvalRecord, type EvalSummary } from './eval';
export type { LabeledImage, LabeledSource, LabelMapping } from '../images/labeled';
export { extract, type ExtractOptions, type ExtractRecord, type ExtractSource, type ImageInput } from './extract';
export { calibrate, type CalibrateOptions } from './calibrate';
export { packWeights, type PackOptions, type PackResult } from './pack';
