import * as fs from 'node:fs';
import * as path from 'node:path';
import picomatch from 'picomatch';
import { VggError } from '../errors';

/** What a folder's images are, by extension (`vgg extract` and `vgg job` read folders alike). */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.bmp', '.avif'];

/**
 * The images an argument names, as a function that lists them, again for every call, in the same
 * order and one at a time: a folder of a million images is walked, never held in memory.
 */
export async function imageList(arg: string): Promise<() => AsyncGenerator<string>> {
  const stat = await fs.promises.stat(arg).catch(() => undefined);
  if (stat?.isDirectory()) return () => walk(arg, Infinity, (file) => IMAGE_EXTENSIONS.includes(path.extname(file).toLowerCase()));
  if (stat?.isFile()) return path.extname(arg).toLowerCase() === '.txt' ? () => lines(arg) : async function* () { yield arg; };
  const glob = picomatch.scan(arg);
  if (!stat && glob.isGlob) {
    // Only as deep as the pattern reaches; '**', braces and extglobs may reach any depth.
    const depth = /\*\*|[{(]/.test(glob.glob) ? Infinity : glob.glob.split('/').length - 1;
    return () => walk(glob.base || '.', depth, picomatch(arg));
  }
  throw new VggError('E_IO', `${arg}: expected a folder, a glob, a .txt list of paths or an image, but ${stat ? 'it is none of these' : 'there is no such file or folder'}`);
}

/** Files under `dir`, `depth` folders down at most, that `keep` accepts: depth first, each folder's entries sorted by name. */
async function* walk(dir: string, depth: number, keep: (file: string) => boolean): AsyncGenerator<string> {
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new VggError('E_IO', `cannot list ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (depth > 0) yield* walk(file, depth - 1, keep);
      continue;
    }
    // Links are followed to files, not to folders, which could make loops.
    const isFile = entry.isFile() || (entry.isSymbolicLink() && (await fs.promises.stat(file).catch(() => undefined))?.isFile());
    if (isFile && keep(file)) yield file;
  }
}

/** The non-empty lines of a list file, read a piece at a time. Paths are taken as written (relative ones from the current folder). */
export async function* lines(file: string): AsyncGenerator<string> {
  const pathOf = (line: string) => line.replace(/\r$/, ''); // lists written on Windows end lines with \r\n
  let rest = '';
  for await (const piece of fs.createReadStream(file, { encoding: 'utf8' })) {
    const parts = (rest + piece).split('\n');
    rest = parts.pop()!;
    for (const line of parts.map(pathOf)) if (line) yield line;
  }
  if (pathOf(rest)) yield pathOf(rest);
}
