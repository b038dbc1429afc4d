import * as fs from 'node:fs';
import type Sharp from 'sharp';
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


/** Per channel of the output tensor: which RGB channel it takes, and value = pixel * scale + offset. */
interface Normalization { source: [number, number, number]; scale: number[]; offset: number[] }

const NORMALIZATION: Record<Preset, Normalization> = (() => {
  const mean = [0.485, 0.456, 0.406];
  const std = [0.229, 0.224, 0.225];
  return {
    // (pixel / 255 - mean) / std
    torchvision: { source: [0, 1, 2], scale: std.map((s) => 1 / (255 * s)), offset: mean.map((m, c) => -m / std[c]) },
    // pixel - mean, in B, G, R order
    caffe: { source: [2, 1, 0], scale: [1, 1, 1], offset: [-103.939, -116.779, -123.68] },
  };
})();

/**
 * Decodes an image file or buffer and turns it into a network input [1, 3, h, w]: EXIF
 * orientation applied, any pixel format made 8-bit RGB, the shorter side resized to `size`,
 * center-cropped to `crop`, normalized per `preset`. The sizes follow torchvision's
 * Resize(size) + CenterCrop(crop) arithmetic exactly, so that the result matches its pipeline.
 */
export async function preprocess(image: string | Buffer, options?: PreprocessOptions): Promise<Tensor> {
  const settings = checkPreprocessOptions(options);
  return rescale(image, await decode(image, settings.maxPixels), settings);
}

/**
 * preprocess() at several sizes from one decode, in the order given: the multi-scale
 * evaluation's inputs (`size` is each of `sizes`; the other options apply to all).
 */
export async function preprocessSizes(image: string | Buffer, sizes: number[], options?: Omit<PreprocessOptions, 'size'>): Promise<Tensor[]> {
  if (!Array.isArray(sizes) || sizes.length === 0) throw argError('sizes', 'a non-empty array of sizes', sizes);
  const opts = checkOptions(options, 'options', ['preset', 'crop', 'maxPixels', 'cropAt', 'flip']);
  const settings = sizes.map((size) => checkPreprocessOptions({ ...opts, size }));
  const decoded = await decode(image, settings[0].maxPixels);
  return Promise.all(settings.map((s) => rescale(image, decoded, s)));
}

type Decoded = Awaited<ReturnType<typeof decode>>;

/** A decoded image resized, cropped and normalized as `settings` say. */
async function rescale(image: string | Buffer, decoded: Decoded, { preset, size, crop, maxPixels, cropAt, flip }: Settings): Promise<Tensor> {
  const { width, height } = decoded.info;

  // torchvision Resize(size): the shorter side becomes `size`, the longer one is truncated, not rounded.
  const [w, h] = width <= height ? [size, Math.trunc((size * height) / width)] : [Math.trunc((size * width) / height), size];
  // A sliver (say 20000x2) would grow to billions of pixels: the limit holds after resizing too.
  if (w * h > maxPixels) throw new VggError('E_IMAGE', `image ${describeImage(image)} (${width}x${height}) resized to ${w}x${h} exceeds the pixel limit of ${maxPixels}`);
  // torchvision CenterCrop: offsets rounded (half to even, as Python's round()).
  const [cw, ch] = crop === false ? [w, h] : [crop, crop];
  const [fx, fy] = cropAt ?? [0.5, 0.5];
  const left = roundHalfEven((w - cw) * fx);
  const top = roundHalfEven((h - ch) * fy);

  const raw = (data: Buffer, rawWidth: number, rawHeight: number) => sharp(data, { raw: { width: rawWidth, height: rawHeight, channels: 3 }, limitInputPixels: false });
  const resized = w > width || h > height
    ? raw(...await enlarge(decoded, w, h))
    // The 'linear' kernel is the one that matches PIL's antialiased bilinear when shrinking (measured).
    : raw(decoded.data, width, height).resize(w, h, { kernel: 'linear', fit: 'fill' });
  const pixels = await resized.extract({ left, top, width: cw, height: ch }).raw().toBuffer();
  const data = normalize(pixels, NORMALIZATION[preset]);
  if (flip) mirrorRows(data, cw);
  return { data, shape: [1, 3, ch, cw] };
}

/** Reverses every row of `width` values in place: a planar image mirrored left to right. */
function mirrorRows(data: Float32Array, width: number): void {
  for (let at = 0; at < data.length; at += width) data.subarray(at, at + width).reverse();
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
  const what = describeImage(image);
  // libvips would open a FIFO and wait for a writer forever.
  if (typeof image === 'string') await checkRegularFile(image, 'image', 'E_IMAGE');
  try {
    // ignoreIcc: PIL, and so torchvision training, reads stored values without colour management.
    return await sharp(image, { autoOrient: true, ignoreIcc: true, limitInputPixels: maxPixels })
      .removeAlpha()
      .toColourspace('srgb') // greyscale, palette, CMYK and 16-bit all become 8-bit RGB
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    if (typeof image === 'string') await checkReadable(image);
    throw new VggError('E_IMAGE', `cannot decode image ${what}: ${(e as Error).message}`, { cause: e });
  }
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

/** Interleaved RGB bytes to planar float channels, through a 256-entry table per channel. */
function normalize(pixels: Buffer, { source, scale, offset }: Normalization): Float32Array {
  const plane = pixels.length / 3;
  const out = new Float32Array(pixels.length);
  for (let c = 0; c < 3; c++) {
    const table = Float32Array.from({ length: 256 }, (_, v) => v * scale[c] + offset[c]);
    const channel = out.subarray(c * plane, (c + 1) * plane);
    for (let i = 0, at = source[c]; i < plane; i++, at += 3) channel[i] = table[pixels[at]];
  }
  return out;
}

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
