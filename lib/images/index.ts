export { preprocess, PRESETS, type Preset, type PreprocessOptions } from './preprocess';
export { imageList, IMAGE_EXTENSIONS } from './sources';
export { classNames } from './classes';
