import * as fs from 'node:fs';
import * as path from 'node:path';

// data/ sits two levels above this file once compiled to dist/lib/.
const IMAGENET_FILE = path.resolve(__dirname, '../../../data/imagenet-classes.txt');
let imagenet: string[] | undefined;

/**
 * Names of a model's classes: the 1000 ImageNet classes (read on first use) for a 1000-way
 * model, `class_<i>` for any other count, since nothing says what those classes are.
 */
export function classNames(count: number): string[] {
  if (count !== 1000) return Array.from({ length: count }, (_, i) => `class_${i}`);
  imagenet ??= fs.readFileSync(IMAGENET_FILE, 'utf8').trimEnd().split('\n');
  return imagenet;
}
