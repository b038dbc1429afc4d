import * as fs from 'node:fs';
import type Sharp from 'sharp';
import type { Metadata } from 'sharp';
import { VggError, argError, checkBoolean, checkInt, checkOneOf, checkOptions, isInt } from '../errors';
import type { Tensor } from '../tensor';
import { PRESETS, type Preset } from '../weights/layers';
import { checkRegularFile } from '../files';

// sharp (libvips) loads on first use: a process that only runs tensors never pays for it.
let sharpModule: typeof Sharp | undefined;
function sharp(...args: Parameters<typeof Sharp>): ReturnType<typeof Sharp> {
  sharpModule ??= require('sharp') as typeof Sharp;
  return sharpModule(...args);
}

/**
 * How pixels become network input. `torchvision`: RGB, /255, ImageNet mean and std (what
 * torchvision's and timm's weights expect). `caffe`: BGR, 0-255, mean subtracted, no std (the
 * original VGG release, and Keras).
 */
export { PRESETS, type Preset };

export interface PreprocessOptions {
  preset?: Preset;
  /** The shorter side is resized to this (256 by default); for the dense head, the scale Q. */
  size?: number;
  /** Side of the center crop (224 by default); false keeps the whole resized image (dense head). */
  crop?: number | false;
  /** Images with more input pixels than this are refused (decompression bombs); 100e6 by default. */
  maxPixels?: number;
  /**
   * Where the crop sits, as fractions [x, y] of the room around it (0: left/top, 1: right/bottom):
   * a training view's random crop. The center (torchvision's rounding) by default.
   */
  cropAt?: [number, number];
  /** Mirror the result left to right (a training view's horizontal flip); false by default. */
  flip?: boolean;
}


/** Per channel of the output tensor: which RGB channel it takes, and its value for each 8-bit level. */
interface Normalization { source: [number, number, number]; tables: Float32Array[] }

const NORMALIZATION: Record<Preset, Normalization> = (() => {
  const mean = [0.485, 0.456, 0.406];
  const std = [0.229, 0.224, 0.225];
  const tables = (scale: number[], offset: number[]) => [0, 1, 2].map((c) => Float32Array.from({ length: 256 }, (_, v) => v * scale[c] + offset[c]));
  return {
    // (pixel / 255 - mean) / std
    torchvision: { source: [0, 1, 2], tables: tables(std.map((s) => 1 / (255 * s)), mean.map((m, c) => -m / std[c])) },
    // pixel - mean, in B, G, R order
    caffe: { source: [2, 1, 0], tables: tables([1, 1, 1], [-103.939, -116.779, -123.68]) },
  };
})();

/**
 * An image resized and cropped, not yet normalized: 8-bit RGB, interleaved, `width` x `height`.
 * What preprocess() gives before it turns it into floats; a batch normalizes its images straight
 * into the batch tensor (normalizeInto) instead, and holds a quarter of the bytes until then.
 */
export interface Pixels { data: Buffer; width: number; height: number; preset: Preset }

/**
 * Decodes an image file or buffer and turns it into a network input [1, 3, h, w]: EXIF
 * orientation applied, any pixel format made 8-bit RGB, the shorter side resized to `size`,
 * center-cropped to `crop`, normalized per `preset`. The sizes follow torchvision's
 * Resize(size) + CenterCrop(crop) arithmetic exactly, so that the result matches its pipeline.
 */
export async function preprocess(image: string | Buffer, options?: PreprocessOptions): Promise<Tensor> {
  return toTensor(await preprocessPixels(image, options));
}

/** preprocess() up to the normalization: the pixels of its tensor. */
export async function preprocessPixels(image: string | Buffer, options?: PreprocessOptions): Promise<Pixels> {
  const settings = checkPreprocessOptions(options);
  const what = await checkImage(image);
  const header = await readImage(image, () => sharp(image).metadata());
  const { width, height } = header.autoOrient;
  const box = cropBox(what, width, height, settings);
  if (!shrinksInOnePass(header, box)) return rescale(what, await decode(image, settings.maxPixels), settings);
  const data = await readImage(image, () => sharp(image, { autoOrient: true, ignoreIcc: true, limitInputPixels: settings.maxPixels })
    // fastShrinkOnLoad false: no WebP scaled decoding; JPEG DCT scaling only from 4x, and at most half the shrink.
    .resize(box.w, box.h, { kernel: 'linear', fit: 'fill', fastShrinkOnLoad: false })
    .extract({ left: box.left, top: box.top, width: box.cw, height: box.ch })
    .toColourspace('srgb')
    .raw()
    .toBuffer());
  if (settings.flip) mirrorRows(data, box.cw);
  return { data, width: box.cw, height: box.ch, preset: settings.preset };
}

/**
 * Whether to decode, resize and crop in one libvips pipeline (decoded strips go straight to the
 * resize: no whole-image buffer, no second pipeline): for 8-bit RGB without alpha (nothing to
 * convert or drop before resizing), shrinking (enlarging is PIL's arithmetic, see enlarge()),
 * from formats libvips decodes at full size. Below 4x it gives the very bytes of decode() then
 * rescale(); from 4x a JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT (sharp's
 * shrink-on-load, leaving at least 2x to the resize): 2-3x less CPU for a photo, and closer
 * to PIL than the two passes (the tests measure both against PIL).
 */
function shrinksInOnePass(header: Metadata, { w, h }: CropBox): boolean {
  const { width, height } = header.autoOrient;
  return ONE_PASS_FORMATS.has(header.format) && header.space === 'srgb' && header.channels === 3 && header.depth === 'uchar' && !header.hasAlpha
    && w <= width && h <= height;
}

const ONE_PASS_FORMATS = new Set<string>(['jpeg', 'png', 'webp']);

/**
 * preprocess() at several sizes from one decode, in the order given: the multi-scale
 * evaluation's inputs (`size` is each of `sizes`; the other options apply to all).
 */
export async function preprocessSizes(image: string | Buffer, sizes: number[], options?: Omit<PreprocessOptions, 'size'>): Promise<Tensor[]> {
  if (!Array.isArray(sizes) || sizes.length === 0) throw argError('sizes', 'a non-empty array of sizes', sizes);
  const opts = checkOptions(options, 'options', ['preset', 'crop', 'maxPixels', 'cropAt', 'flip']);
  const settings = sizes.map((size) => checkPreprocessOptions({ ...opts, size }));
  const what = await checkImage(image);
  const decoded = await decode(image, settings[0].maxPixels);
  return Promise.all(settings.map(async (s) => toTensor(await rescale(what, decoded, s))));
}

type Decoded = Awaited<ReturnType<typeof decode>>;

interface CropBox { w: number; h: number; left: number; top: number; cw: number; ch: number }

/** torchvision's Resize(size) then CenterCrop(crop) of a width x height image: the resized size and the crop. */
function cropBox(what: string, width: number, height: number, { size, crop, maxPixels, cropAt }: Settings): CropBox {
  // torchvision Resize(size): the shorter side becomes `size`, the longer one is truncated, not rounded.
  const [w, h] = width <= height ? [size, Math.trunc((size * height) / width)] : [Math.trunc((size * width) / height), size];
  // A sliver (say 20000x2) would grow to billions of pixels: the limit holds after resizing too.
  if (w * h > maxPixels) throw new VggError('E_IMAGE', `image ${what} (${width}x${height}) resized to ${w}x${h} exceeds the pixel limit of ${maxPixels}`);
  // torchvision CenterCrop: offsets rounded (half to even, as Python's round()).
  const [cw, ch] = crop === false ? [w, h] : [crop, crop];
  const [fx, fy] = cropAt ?? [0.5, 0.5];
  return { w, h, cw, ch, left: roundHalfEven((w - cw) * fx), top: roundHalfEven((h - ch) * fy) };
}

/** A decoded image resized and cropped as `settings` say. */
async function rescale(what: string, decoded: Decoded, settings: Settings): Promise<Pixels> {
  const { width, height } = decoded.info;
  const { w, h, left, top, cw, ch } = cropBox(what, width, height, settings);

  const raw = (data: Buffer, rawWidth: number, rawHeight: number) => sharp(data, { raw: { width: rawWidth, height: rawHeight, channels: 3 }, limitInputPixels: false });
  const resized = w > width || h > height
    ? raw(...await enlarge(decoded, w, h))
    // The 'linear' kernel is the one that matches PIL's antialiased bilinear when shrinking (measured).
    : raw(decoded.data, width, height).resize(w, h, { kernel: 'linear', fit: 'fill' });
  const data = await resized.extract({ left, top, width: cw, height: ch }).raw().toBuffer();
  if (settings.flip) mirrorRows(data, cw);
  return { data, width: cw, height: ch, preset: settings.preset };
}

/** Reverses every row of `width` RGB pixels in place: the image mirrored left to right. */
function mirrorRows(data: Buffer, width: number): void {
  for (let row = 0; row < data.length; row += 3 * width) {
    for (let a = row, b = row + 3 * (width - 1); a < b; a += 3, b -= 3) {
      for (let c = 0; c < 3; c++) [data[a + c], data[b + c]] = [data[b + c], data[a + c]];
    }
  }
}

/**
 * PIL's bilinear enlargement, which samples the source at (x + 0.5) / scale - 0.5 and repeats
 * the edge pixels beyond it: an affine map with those offsets over the image padded by one
 * copied pixel. sharp's own upscaling samples elsewhere (up to 100 levels apart from PIL at the
 * edges of a photo); this is within 1 level everywhere (rounding). The result is a little
 * larger than w x h: its top-left w x h pixels are the enlarged image.
 */
async function enlarge(decoded: Decoded, w: number, h: number): Promise<[Buffer, number, number]> {
  const { width, height } = decoded.info;
  const padded = await sharp(decoded.data, { raw: { width, height, channels: 3 }, limitInputPixels: false })
    .extend({ top: 1, bottom: 1, left: 1, right: 1, extendWith: 'copy' })
    .raw()
    .toBuffer();
  // Output x = scale * (padded x + idx) + odx = scale * (x + 0.5) - 0.5, as PIL.
  const { data, info } = await sharp(padded, { raw: { width: width + 2, height: height + 2, channels: 3 }, limitInputPixels: false })
    .affine([[w / width, 0], [0, h / height]], { idx: -0.5, idy: -0.5, odx: -0.5, ody: -0.5, interpolator: 'bilinear' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return [data, info.width, info.height];
}

type Settings = Required<Omit<PreprocessOptions, 'cropAt'>> & Pick<PreprocessOptions, 'cropAt'>;

/** Options with defaults filled in; every value checked, unknown keys refused. */
function checkPreprocessOptions(options: PreprocessOptions | undefined): Settings {
  const opts = checkOptions(options, 'options', ['preset', 'size', 'crop', 'maxPixels', 'cropAt', 'flip']);
  const preset = checkOneOf(opts.preset ?? 'torchvision', 'options.preset', PRESETS);
  const size = checkInt(opts.size ?? 256, 'options.size');
  const crop = opts.crop ?? 224;
  if (crop !== false && !isInt(crop)) throw argError('options.crop', 'a positive integer or false', crop);
  // torchvision would pad a crop larger than the image with zeros; a network input of mostly padding is a mistake.
  if (crop !== false && crop > size) throw new VggError('E_ARG', `Expected options.crop (${crop}) to be at most options.size (${size})`);
  const maxPixels = checkInt(opts.maxPixels ?? 100e6, 'options.maxPixels');
  const { cropAt } = opts;
  if (cropAt !== undefined && !(Array.isArray(cropAt) && cropAt.length === 2 && cropAt.every((f) => typeof f === 'number' && f >= 0 && f <= 1))) {
    throw argError('options.cropAt', 'two fractions [x, y] from 0 to 1', cropAt);
  }
  const flip = checkBoolean(opts.flip ?? false, 'options.flip');
  return { preset, size, crop, maxPixels, cropAt, flip };
}

/**
 * The whole image as oriented 8-bit RGB, interleaved. Decoding is a pass of its own because
 * sharp drops alpha only after resizing, and resizes alpha images premultiplied: PIL's
 * convert('RGB') drops alpha first, keeping the colour under transparent pixels.
 */
async function decode(image: string | Buffer, maxPixels: number): Promise<{ data: Buffer; info: { width: number; height: number } }> {
  // ignoreIcc: PIL, and so torchvision training, reads stored values without colour management.
  return readImage(image, () => sharp(image, { autoOrient: true, ignoreIcc: true, limitInputPixels: maxPixels })
    .removeAlpha()
    .toColourspace('srgb') // greyscale, palette, CMYK and 16-bit all become 8-bit RGB
    .raw()
    .toBuffer({ resolveWithObject: true }));
}

/** `read`'s result; its failure as E_IMAGE (undecodable) or E_IO (a file the file system refuses). */
async function readImage<T>(image: string | Buffer, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (e) {
    if (typeof image === 'string') await checkReadable(image);
    throw new VggError('E_IMAGE', `cannot decode image ${describeImage(image)}: ${(e as Error).message}`, { cause: e });
  }
}

/** How messages name `image`, once it is known to be a path to a regular file or a Buffer. */
async function checkImage(image: string | Buffer): Promise<string> {
  const what = describeImage(image);
  // libvips would open a FIFO and wait for a writer forever.
  if (typeof image === 'string') await checkRegularFile(image, 'image', 'E_IMAGE');
  return what;
}

function describeImage(image: unknown): string {
  if (typeof image === 'string' && image.length > 0) return image;
  if (Buffer.isBuffer(image)) return `buffer of ${image.length} bytes`;
  throw argError('image', 'a file path or a Buffer', image);
}

/** A file the file system refuses is E_IO, like a weights file, rather than a bad image. */
async function checkReadable(file: string): Promise<void> {
  try {
    await fs.promises.access(file, fs.constants.R_OK);
  } catch (e) {
    throw new VggError('E_IO', `cannot read image ${file}: ${(e as Error).message}`, { cause: e });
  }
}

function toTensor(pixels: Pixels): Tensor {
  const data = new Float32Array(pixels.data.length);
  normalizeInto(pixels, data, 0);
  return { data, shape: [1, 3, pixels.height, pixels.width] };
}

/**
 * Interleaved RGB bytes to planar float channels [3, height, width], written into `out` from
 * `offset` on (a batch tensor's row): one pass over the pixels, a 256-entry table per channel.
 */
export function normalizeInto({ data, preset }: Pixels, out: Float32Array, offset: number): void {
  const { source: [s0, s1, s2], tables: [t0, t1, t2] } = NORMALIZATION[preset];
  const plane = data.length / 3;
  const [p0, p1, p2] = [offset, offset + plane, offset + 2 * plane];
  for (let i = 0, at = 0; i < plane; i++, at += 3) {
    out[p0 + i] = t0[data[at + s0]];
    out[p1 + i] = t1[data[at + s1]];
    out[p2 + i] = t2[data[at + s2]];
  }
}

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
