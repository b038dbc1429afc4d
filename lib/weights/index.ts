export { openWeights, type LayerParams, type ModelWeights } from './open';
export { archMetadata, bindWeights, type Naming } from './binding';
export { encodeSafetensors, parseSafetensors, readF32, readSafetensorsFile, writeSafetensors, type SafetensorsFile } from './safetensors';
export { loadCalibration, writeCalibration, type Calibration } from './calibration';
export { defaultWeights, cacheDir, type DefaultWeightsOptions } from './default-weights';
export { fetchWeights, HUB_REPOS, type FetchOptions, type FetchProgress, type FetchResult } from './hub';
export { hubCacheDir } from './hf-cache';
