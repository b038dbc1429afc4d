import * as fs from 'node:fs';
import * as path from 'node:path';

// data/ sits two levels above this file once compiled to dist/lib/.
const DATA = path.resolve(__dirname, '../../../data');
let imagenet: string[] | undefined;
let synsets: string[] | undefined;

const readLines = (file: string) => fs.readFileSync(path.join(DATA, file), 'utf8').trimEnd().split('\n');

/**
 * Names of a model's classes: the 1000 ImageNet classes (read on first use) for a 1000-way
 * model, `class_<i>` for any other count, since nothing says what those classes are.
 */
export function classNames(count: number): string[] {
  if (count !== 1000) return Array.from({ length: count }, (_, i) => `class_${i}`);
  imagenet ??= readLines('imagenet-classes.txt');
  return imagenet;
}

/**
 * The WordNet ids of the ILSVRC-2012 classes (`n01440764` is class 0, tench) in the order of
 * classNames(1000), which is their sorted order, as torchvision and Caffe number them; none
 * for a model of any other class count.
 */
export function synsetIds(count: number): string[] | undefined {
  if (count !== 1000) return undefined;
  synsets ??= readLines('imagenet-synsets.txt');
  return synsets;
}
