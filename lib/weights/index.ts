export { openWeights, type LayerParams, type ModelWeights } from './open';
export { archMetadata, bindWeights, type Naming } from './binding';
export { encodeSafetensors, parseSafetensors, readF32, readSafetensorsFile, writeSafetensors, type SafetensorsFile } from './safetensors';
export { loadCalibration, writeCalibration, type Calibration } from './calibration';
export { defaultWeights, cacheDir } from './default-weights';
export { fetchWeights, HUB_REPOS, type FetchProgress } from './hub';
