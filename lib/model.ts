import { Engine, loadEngine, type LoadOptions } from './engine';
import { classify, evaluate, extract, type ClassifyOptions, type EvalOptions, type EvalSummary, type ExtractOptions, type ExtractRecord, type ExtractSource, type LabeledSource, type Prediction } from './tasks';

/**
 * The public model: the engine (run, blobNames, pack, dispose) with the applications a user
 * reaches for most as methods. The engine itself never imports them.
 */
export class Model extends Engine {
  /** The most probable classes of an image file or buffer: see classify(). */
  classify(image: string | Buffer, options?: ClassifyOptions): Promise<Prediction[]> {
    return classify(this, image, options);
  }

  /** Features of a stream of images, in input order, with decoding overlapping inference: see extract(). */
  extract(source: ExtractSource, options?: ExtractOptions): AsyncGenerator<ExtractRecord, void, undefined> {
    return extract(this, source, options);
  }

  /** Top-1 and top-5 error on labeled images under a test protocol: see evaluate(). */
  evaluate(source: LabeledSource, options?: EvalOptions): Promise<EvalSummary> {
    return evaluate(this, source, options);
  }
}

/**
 * Loads a VGG from a safetensors file (torchvision or timm names, F32/F16/BF16) or a packed
 * file, mapped into memory rather than read. The returned model runs on its own native thread.
 */
export function loadModel(file: string, options?: LoadOptions): Promise<Model> {
  return loadEngine(file, options, Model);
}
