import * as os from 'node:os';
import { VggError, checkInt, checkOneOf, checkOptions, argError } from '../errors';
import type { Runner } from '../engine';
import { openLabeled, type LabeledItem, type LabeledSource, type LabelMapping } from '../images/labeled';
import { PRESETS, preprocessSizes, type Preset } from '../images/preprocess';
import type { Tensor } from '../tensor';
import { centerPosteriors, checkProtocolOptions, cropFor, posterior, topClasses, type Protocol, type ProtocolOptions, type ProtocolSettings } from './protocols';
import { batches, mapAhead } from './pipeline';

export interface EvalOptions extends ProtocolOptions {
  preset?: Preset;
  /** Images decoded at once; the number of cores by default. */
  concurrency?: number;
  /** Called with every image's record in input order, and awaited (a slow writer slows the run, not memory). */
  onRecord?: (record: EvalRecord) => void | Promise<void>;
  /**
   * Called as each entry is read into the pipeline, before it is decoded (progress: the center
   * protocol's records come a batch at a time, the entries under way one by one).
   */
  onRead?: (id: string) => void;
}

/** How many classes a prediction lists: top-5 error is the paper's second measure. */
const TOP = 5;

/** One image's outcome, or why it was skipped. */
export interface EvalRecord {
  /** The image's path (`buffer:<i>` for a Buffer; a folder for an empty class). */
  id: string;
  /** The label as written. */
  label: string;
  /** The true class index; absent for an unknown label or an empty class. */
  index?: number;
  /** The 5 most probable classes, most probable first, and their posteriors. */
  top?: number[];
  probs?: number[];
  skipped?: 'unknown label' | 'empty class' | 'unreadable';
  /** Why an image is unreadable (E_IMAGE, E_IO). */
  error?: VggError;
}

export interface EvalSummary {
  protocol: Protocol;
  scales: number[];
  flip: boolean;
  preset: Preset;
  labels: LabelMapping;
  note?: string;
  /** Images scored: readable, with a known label. */
  images: number;
  /** Percentages of the images scored; null when there were none. */
  top1Error: number | null;
  top5Error: number | null;
  skipped: { unknownLabel: number; emptyClasses: number; unreadable: number };
  seconds: number;
  /** Images scored per second, decoding included. */
  imagesPerSecond: number;
}

/**
 * Top-1 and top-5 error of a model on labeled images (see openLabeled) under a test protocol
 * (see protocols.ts). Images stream: decoding runs ahead of inference and every stage holds a
 * bounded number of images, so memory stays flat however large the set. Unknown labels, empty
 * classes and unreadable images are counted apart and given to `onRecord`, not thrown; a bad
 * option, an unreadable list or folder, or a failed run throws.
 */
export async function evaluate(model: Runner, source: LabeledSource, options?: EvalOptions): Promise<EvalSummary> {
  const opts = checkOptions(options, 'options', ['protocol', 'scales', 'flip', 'batchSize', 'preset', 'concurrency', 'onRecord', 'onRead']);
  const settings = checkProtocolOptions(opts);
  const preset = checkOneOf(opts.preset ?? model.info.preset ?? 'torchvision', 'options.preset', PRESETS);
  const concurrency = checkInt(opts.concurrency ?? os.availableParallelism(), 'options.concurrency');
  for (const name of ['onRecord', 'onRead'] as const) {
    if (opts[name] !== undefined && typeof opts[name] !== 'function') throw argError(`options.${name}`, 'a function', opts[name]);
  }
  const set = await openLabeled(source, model.info.classes, model.info.classNames);

  const started = performance.now();
  const decoded = mapAhead(read(set.items(), opts.onRead), concurrency, (item) => decode(item, settings, preset));
  // The center protocol runs many images' crops at once; the others, each image's own inputs.
  const groups = batches(decoded, settings.protocol === 'center' ? settings.batchSize : 1);
  // Two groups in flight: the next one is queued on the native thread while this one's records go out.
  const scored = mapAhead(groups, 2, (group) => score(model, group, settings));
  const tally = { images: 0, top1: 0, top5: 0, unknownLabel: 0, emptyClasses: 0, unreadable: 0 };
  for await (const records of scored) {
    for (const record of records) {
      if (record.skipped === 'unknown label') tally.unknownLabel++;
      else if (record.skipped === 'empty class') tally.emptyClasses++;
      else if (record.skipped === 'unreadable') tally.unreadable++;
      else {
        tally.images++;
        if (record.top![0] !== record.index) tally.top1++;
        if (!record.top!.includes(record.index!)) tally.top5++;
      }
      await opts.onRecord?.(record);
    }
  }

  const seconds = (performance.now() - started) / 1000;
  const percent = (errors: number) => (tally.images ? (100 * errors) / tally.images : null);
  return {
    protocol: settings.protocol, scales: settings.scales, flip: settings.flip, preset,
    labels: set.labels, ...(set.note ? { note: set.note } : {}),
    images: tally.images, top1Error: percent(tally.top1), top5Error: percent(tally.top5),
    skipped: { unknownLabel: tally.unknownLabel, emptyClasses: tally.emptyClasses, unreadable: tally.unreadable },
    seconds, imagesPerSecond: seconds > 0 ? tally.images / seconds : 0,
  };
}

/** An item with its network inputs (one per scale), or its record when it will not be scored. */
interface Decoded { item: LabeledItem; inputs?: Tensor[]; record?: EvalRecord }

async function* read(items: AsyncGenerator<LabeledItem>, onRead: ((id: string) => void) | undefined): AsyncGenerator<LabeledItem> {
  for await (const item of items) {
    onRead?.(item.id);
    yield item;
  }
}

async function decode(item: LabeledItem, settings: ProtocolSettings, preset: Preset): Promise<Decoded> {
  const { id, label, index, problem } = item;
  if (problem) return { item, record: { id, label, skipped: problem } };
  try {
    return { item, inputs: await preprocessSizes(item.image!, settings.scales, { preset, crop: cropFor(settings.protocol) }) };
  } catch (e) {
    // An unreadable image is that image's problem; a bad option or a bug is everyone's.
    if (e instanceof VggError && (e.code === 'E_IMAGE' || e.code === 'E_IO')) return { item, record: { id, label, index, skipped: 'unreadable', error: e } };
    throw e;
  }
}

/** The records of a group of decoded items, in order: center crops in one run, other protocols an image at a time. */
async function score(model: Runner, group: Decoded[], settings: ProtocolSettings): Promise<EvalRecord[]> {
  const ready = group.filter((d) => d.inputs);
  const probs = !ready.length ? []
    : settings.protocol === 'center' ? await centerPosteriors(model, ready.map((d) => d.inputs![0]), settings.flip)
      : [await posterior(model, ready[0].inputs!, settings)];
  return group.map((d) => {
    if (d.record) return d.record;
    const prob = probs[ready.indexOf(d)];
    const top = topClasses(prob, Math.min(TOP, prob.length));
    return { id: d.item.id, label: d.item.label, index: d.item.index, top, probs: top.map((i) => prob[i]) };
  });
}
