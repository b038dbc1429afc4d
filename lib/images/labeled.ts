import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError, argError } from '../errors';
import { classNames, synsetIds } from './classes';
import { IMAGE_EXTENSIONS, imageList, lines } from './sources';

/** An image with its class: an index, a synset id such as `n01440764`, or a class name. */
export interface LabeledImage {
  image: string | Buffer;
  label: number | string;
}

/**
 * Labeled images: a folder with one folder of images per class, a `.csv` (`path,label`),
 * `.tsv` (`path<TAB>label`) or `.txt` (`path label`, as Caffe's val.txt) list, or an (async)
 * iterable of { image, label }.
 */
export type LabeledSource = string | Iterable<LabeledImage> | AsyncIterable<LabeledImage>;

/** An entry of a labeled set: an image and its class index, or why it cannot be scored. */
export interface LabeledItem {
  /** The image's path, `buffer:<i>` for a Buffer, or the folder of an empty class. */
  id: string;
  image?: string | Buffer;
  /** The label as written: a folder name, a list's field, or the number given. */
  label: string;
  /** The class index; absent when `problem` is set. */
  index?: number;
  problem?: 'unknown label' | 'empty class';
}

/** How labels became class indices. */
export type LabelMapping = 'synset ids' | 'class names' | 'synset ids and class names' | 'folder order' | 'as listed';

export interface LabeledSet {
  labels: LabelMapping;
  /** What a user should know about the mapping (folder order, a class count that differs). */
  note?: string;
  /** The entries, in a stable order; each call lists them again, one at a time. */
  items(): AsyncGenerator<LabeledItem>;
}

/** The first line of a list is a header when its path field is one of these. */
const HEADER_FIELDS = ['path', 'file', 'filename', 'image', 'image_path', 'imageid', 'id'];

/**
 * Opens a labeled source for a model of `classes` classes, named `names` where the weights name
 * them (else classNames(classes)); only a bad argument or an unreadable list or folder throws.
 */
export async function openLabeled(source: LabeledSource, classes: number, names?: string[]): Promise<LabeledSet> {
  const labels = new Labels(classes, names);
  if (typeof source !== 'string') {
    const iterable = typeof source === 'object' && source !== null && (Symbol.iterator in source || Symbol.asyncIterator in source);
    if (!iterable || Buffer.isBuffer(source)) throw argError('source', 'a folder or list path, or an (async) iterable of { image, label }', source);
    return { labels: 'as listed', items: () => fromIterable(source, labels) };
  }
  const stat = await fs.promises.stat(source).catch((e: NodeJS.ErrnoException) => {
    throw new VggError('E_IO', `cannot read labeled images ${source}: ${e.code ?? e.message}`, { cause: e });
  });
  if (stat.isDirectory()) return fromFolders(source, labels);
  const separator = LIST_SEPARATORS[path.extname(source).toLowerCase()];
  if (!stat.isFile() || !separator) {
    throw new VggError('E_ARG', `${source}: expected a folder of class folders, or a .csv, .tsv or .txt list of path and label per line`);
  }
  return { labels: 'as listed', items: () => fromList(source, separator, labels) };
}

/** Label text to class index: an index, a synset id (ImageNet's 1000 classes) or a class name. */
class Labels {
  readonly count: number;
  #synsets = new Map<string, number>();
  /** Names that two classes share (ImageNet's two cranes, if a list names them alike) map to -1. */
  #names = new Map<string, number>();

  /** `names`: the weights' own class names, which replace ImageNet's names and synset ids. */
  constructor(count: number, names?: string[]) {
    this.count = count;
    if (!names) synsetIds(count)?.forEach((id, i) => this.#synsets.set(id, i));
    (names ?? classNames(count)).forEach((name, i) => this.#names.set(name, this.#names.has(name) ? -1 : i));
  }

  /** A folder name: a synset id or a class name. */
  byName(name: string): { index: number; kind: 'synset' | 'name' } | undefined {
    const synset = this.#synsets.get(name);
    if (synset !== undefined) return { index: synset, kind: 'synset' };
    const index = this.#names.get(name);
    return index !== undefined && index >= 0 ? { index, kind: 'name' } : undefined;
  }

  /** A list's label: also an index (0-based, the model's class order) unless a class is named so. */
  index(label: string | number): number | undefined {
    const named = typeof label === 'string' ? this.byName(label) : undefined;
    if (named) return named.index;
    const n = typeof label === 'number' ? label : /^\d+$/.test(label) ? Number(label) : NaN;
    return Number.isSafeInteger(n) && n < this.count && n >= 0 ? n : undefined;
  }
}

const item = (id: string, image: string | Buffer, label: string, index: number | undefined): LabeledItem =>
  (index === undefined ? { id, image, label, problem: 'unknown label' } : { id, image, label, index });

async function* fromIterable(source: Iterable<LabeledImage> | AsyncIterable<LabeledImage>, labels: Labels): AsyncGenerator<LabeledItem> {
  let i = 0;
  for await (const entry of source) {
    const { image, label } = (entry ?? {}) as Partial<LabeledImage>;
    const isImage = (typeof image === 'string' && image.length > 0) || Buffer.isBuffer(image);
    if (!isImage || (typeof label !== 'string' && typeof label !== 'number')) {
      throw argError(`source item ${i}`, '{ image: a path or a Buffer, label: an index, synset id or class name }', entry);
    }
    yield item(typeof image === 'string' ? image : `buffer:${i}`, image, String(label), labels.index(label));
    i++;
  }
}

/**
 * One folder per class. Folders named by synset id or class name are those classes (a folder
 * that is neither is an unknown label); when no folder is, the folders in sorted order are
 * classes 0..k-1, and the note says so. Images outside the class folders have no label.
 */
async function fromFolders(root: string, labels: Labels): Promise<LabeledSet> {
  const entries = await fs.promises.readdir(root, { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => {
    throw new VggError('E_IO', `cannot list ${root}: ${e.code ?? e.message}`, { cause: e });
  });
  const names = entries.map((e) => e.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const isFolder = async (name: string) => (await fs.promises.stat(path.join(root, name)).catch(() => undefined))?.isDirectory() ?? false;
  const folders: string[] = [];
  const loose: string[] = [];
  for (const name of names) {
    if (await isFolder(name)) folders.push(name);
    else if (IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase())) loose.push(path.join(root, name));
  }
  if (!folders.length) throw new VggError('E_ARG', `${root} has no class folders: expected one folder of images per class, or a .csv, .tsv or .txt list of path and label per line`);
  const named = folders.map((name) => labels.byName(name));
  const kinds = new Set(named.flatMap((n) => (n ? [n.kind] : [])));
  const byOrder = kinds.size === 0;
  const classes = folders.map((name, i) => ({
    name,
    index: byOrder ? (i < labels.count ? i : undefined) : named[i]?.index,
  }));
  const note = byOrder
    ? `the ${folders.length} class folders are neither synset ids nor class names of this model: folder i in sorted order is class i`
      + (folders.length !== labels.count ? ` (the model has ${labels.count} classes)` : '')
    : undefined;
  const mapping: LabelMapping = byOrder ? 'folder order' : kinds.size === 2 ? 'synset ids and class names' : kinds.has('synset') ? 'synset ids' : 'class names';
  return {
    labels: mapping,
    ...(note ? { note } : {}),
    async *items() {
      for (const file of loose) yield item(file, file, '', undefined);
      for (const { name, index } of classes) {
        const folder = path.join(root, name);
        let empty = true;
        for await (const file of (await imageList(folder))()) {
          empty = false;
          yield item(file, file, name, index);
        }
        if (empty) yield { id: folder, label: name, problem: 'empty class' };
      }
    },
  };
}

const LIST_SEPARATORS: Record<string, RegExp> = { '.csv': /,(?=[^,]*$)/, '.tsv': /\t(?=[^\t]*$)/, '.txt': /\s+(?=\S+\s*$)/ };

/** A list's lines as items: split at the last separator (paths may hold commas), relative paths from the list's folder. */
async function* fromList(file: string, separator: RegExp, labels: Labels): AsyncGenerator<LabeledItem> {
  const base = path.dirname(file);
  let first = true;
  for await (const line of lines(file)) {
    const [rawPath, rawLabel = ''] = line.split(separator);
    const [where, label] = [unquote(rawPath.trim()), unquote(rawLabel.trim())];
    if (first && HEADER_FIELDS.includes(where.toLowerCase())) {
      first = false;
      continue;
    }
    first = false;
    if (!where) continue;
    const image = path.resolve(base, where);
    yield item(image, image, label, label ? labels.index(label) : undefined);
  }
}

/** A CSV field without its quotes ("a ""b"".jpg" is a "b".jpg). */
const unquote = (field: string) => (/^".*"$/s.test(field) ? field.slice(1, -1).replace(/""/g, '"') : field);
