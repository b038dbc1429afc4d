export { loadModel, Model } from './model';
export type { LoadOptions, RunOptions, ModelInfo, Outputs } from './model';
export { VggError } from './errors';
export { cudaStatus } from './device';
export type { CudaStatus, Device, Precision } from './device';
export type { VggErrorCode } from './errors';
export type { Tensor } from './safetensors';
export { presetArch, inferShapes, countParams, countMacs, layerTable, blobNames, PRESET_CFGS } from './topology';
export type { Arch, CfgItem, Head, LayerRow } from './topology';
