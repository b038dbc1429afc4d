export { Engine, archInfo, type EngineSettings, type ModelInfo, type Outputs, type RunOptions, type Runner } from './model';
export { checkLoadOptions, loadEngine, startEngine, type EngineClass, type LoadOptions, type LoadSettings } from './load';
export { cudaStatus, type CudaStatus, type Device, type Precision } from './device';
export { FcTrainer, type FcLayerInit, type StepResult, type TrainerOptions } from './trainer';
