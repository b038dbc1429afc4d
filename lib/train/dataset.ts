import * as fs from 'node:fs';
import { VggError } from '../errors';
import { openLabeled, type LabeledSource } from '../images/labeled';
import { mulberry32 } from '../weights/random';

/** A training or validation image and its class (an index into the set's class names). */
export interface Example { image: string | Buffer; id: string; label: number }

/** Labeled images for training: the classes (named by the folders or the list) and every image's class. */
export interface Dataset { classes: string[]; examples: Example[] }

const describeSource = (source: LabeledSource) => (typeof source === 'string' ? source : 'the labeled images');

/** Label text in the order classes are numbered: numerically when every label is a number, else sorted. */
function classOrder(labels: Iterable<string>): string[] {
  const unique = [...new Set(labels)];
  const numeric = unique.every((l) => /^\d+$/.test(l));
  return unique.sort((a, b) => (numeric ? Number(a) - Number(b) : a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Reads labeled images (class folders, a list, or an iterable: as `vgg eval` reads them) into
 * classes and examples. With `classes`, the labels must be among them (a validation set);
 * without, the labels found are the classes. Everything that would stop training later is E_ARG
 * (E_IO for a listed file that is not there) now, naming the folder, file or label.
 */
export async function readDataset(source: LabeledSource, classes?: string[], what = describeSource(source)): Promise<Dataset> {
  // No class is known in advance: the items keep their labels as written.
  const set = await openLabeled(source, 0, []);
  const found: { image: string | Buffer; id: string; label: string }[] = [];
  const seen = new Set<string>();
  for await (const item of set.items()) {
    if (item.problem === 'empty class') throw new VggError('E_ARG', `${what}: class folder ${item.id} has no images`);
    if (!item.label) throw new VggError('E_ARG', `${what}: ${item.id} has no class (put it in a class folder, or give it a label)`);
    if (seen.has(item.id)) throw new VggError('E_ARG', `${what}: ${item.id} is listed twice`);
    seen.add(item.id);
    if (typeof item.image === 'string') {
      const stat = await fs.promises.stat(item.image).catch((e: NodeJS.ErrnoException) => {
        throw new VggError('E_IO', `${what} names ${item.image}, which cannot be read: ${e.code ?? e.message}`, { cause: e });
      });
      if (!stat.isFile()) throw new VggError('E_IO', `${what} names ${item.image}, which is not a file`);
    }
    found.push({ image: item.image!, id: item.id, label: item.label });
  }
  if (!found.length) throw new VggError('E_ARG', `${what} has no labeled images`);
  const names = classes ?? classOrder(found.map((f) => f.label));
  if (!classes && names.length < 2) throw new VggError('E_ARG', `${what} has one class (${names[0]}): a classifier needs at least 2`);
  const index = new Map(names.map((n, i) => [n, i]));
  const examples = found.map(({ image, id, label }) => {
    const i = index.get(label);
    if (i === undefined) throw new VggError('E_ARG', `${what}: ${id} is of class ${JSON.stringify(label)}, which the training images do not have (${names.join(', ')})`);
    return { image, id, label: i };
  });
  return { classes: names, examples };
}

/**
 * Holds out `fraction` of each class's examples (at least one of a class of two or more, never
 * all of them), chosen by a seeded shuffle; both parts keep the input order.
 */
export function splitDataset(examples: Example[], fraction: number, seed: number): { train: Example[]; val: Example[] } {
  const random = mulberry32(seed ^ 0x5eed);
  const byClass = new Map<number, number[]>();
  examples.forEach((e, i) => {
    const members = byClass.get(e.label) ?? [];
    members.push(i);
    byClass.set(e.label, members);
  });
  const held = new Set<number>();
  for (const members of [...byClass.values()]) {
    const n = members.length;
    const k = n < 2 ? 0 : Math.min(n - 1, Math.max(1, Math.round(fraction * n)));
    shuffle(members, random);
    members.slice(0, k).forEach((i) => held.add(i));
  }
  return { train: examples.filter((_, i) => !held.has(i)), val: examples.filter((_, i) => held.has(i)) };
}

/** Fisher-Yates in place, from a mulberry32 stream. */
export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = random() % (i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}
