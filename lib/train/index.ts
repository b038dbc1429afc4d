export { trainClassifier, type TrainSummary } from './train';
export { AUGMENTS, SCALE_VIEWS, TRAIN_LAYERS, type Augment, type EpochLog, type TrainLayers, type TrainOptions } from './options';
