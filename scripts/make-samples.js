#!/usr/bin/env node
// Makes the images in samples/ that the README's first command runs on. They are committed;
// this script records how they were made (run it from the repository root, with sharp installed
// and test/fixtures present). The drawn scenes are made of gradients, shapes and seeded
// noise: they vary the way photos do (colour, texture, edges, size, format), so that features
// and predictions differ between them, but they are not photos: coffee.jpg is the real one.
'use strict';
const path = require('node:path');
const sharp = require('sharp');
const { mulberry32 } = require('../dist/lib/weights/random'); // npm run build:ts first

const OUT = path.resolve('samples');
const COFFEE = path.resolve('test/fixtures/images/coffee.png');

/** Seeded uniform numbers in [0, 1), so that the images come out the same each run. */
function random(seed) {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

const svg = (w, h, body) => Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">${body}</svg>`);

/**
 * Film-grain-like texture: grey noise drawn at half the size and scaled up smoothly,
 * overlaid softly so that flat areas are not perfectly flat, as in a photo.
 */
async function grain(image, w, h, seed) {
  const [gw, gh] = [Math.ceil(w / 2), Math.ceil(h / 2)];
  const rand = random(seed);
  const noise = Buffer.alloc(gw * gh, 0).map(() => 104 + 48 * rand());
  const layer = await sharp(noise, { raw: { width: gw, height: gh, channels: 1 } }).resize(w, h, { kernel: 'cubic' })
    .toColourspace('srgb').png().toBuffer();
  return sharp(image).composite([{ input: layer, blend: 'soft-light' }]);
}

/** Sky, sun, two ranges of hills and a lake. */
function landscape(w, h) {
  return svg(w, h, `
    <defs>
      <linearGradient id="sky" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#3b6fb6"/><stop offset="1" stop-color="#f3d9a4"/></linearGradient>
      <radialGradient id="sun"><stop offset="0" stop-color="#fffbe8"/><stop offset="0.5" stop-color="#ffe08a"/><stop offset="1" stop-color="#ffe08a" stop-opacity="0"/></radialGradient>
      <linearGradient id="lake" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#5d8fb8"/><stop offset="1" stop-color="#23405e"/></linearGradient>
    </defs>
    <rect width="${w}" height="${h}" fill="url(#sky)"/>
    <circle cx="${0.7 * w}" cy="${0.35 * h}" r="${0.16 * h}" fill="url(#sun)"/>
    <path d="M0 ${0.62 * h} Q ${0.25 * w} ${0.38 * h} ${0.5 * w} ${0.58 * h} T ${w} ${0.5 * h} V ${h} H 0 Z" fill="#6d8a5a"/>
    <path d="M0 ${0.75 * h} Q ${0.35 * w} ${0.55 * h} ${0.7 * w} ${0.72 * h} T ${w} ${0.7 * h} V ${h} H 0 Z" fill="#3f6b35"/>
    <ellipse cx="${0.3 * w}" cy="${0.9 * h}" rx="${0.35 * w}" ry="${0.07 * h}" fill="url(#lake)"/>`);
}

/** Three shaded fruits with shadows on a wooden table. */
function fruit(w, h) {
  const balls = [['#d1271b', 0.3, 0.58, 0.17], ['#f08a12', 0.62, 0.52, 0.2], ['#e8cf2a', 0.5, 0.78, 0.13]];
  return svg(w, h, `
    <defs>
      <linearGradient id="wood" x1="0" y1="0" x2="1" y2="0.2"><stop offset="0" stop-color="#7a4b26"/><stop offset="0.5" stop-color="#a8703d"/><stop offset="1" stop-color="#6a3f1f"/></linearGradient>
      ${balls.map(([c], i) => `<radialGradient id="b${i}" cx="0.35" cy="0.3" r="0.75"><stop offset="0" stop-color="#fff" stop-opacity="0.8"/><stop offset="0.25" stop-color="${c}"/><stop offset="1" stop-color="#2a0a05"/></radialGradient>`).join('')}
    </defs>
    <rect width="${w}" height="${h}" fill="url(#wood)"/>
    ${[0.2, 0.45, 0.7, 0.9].map((y) => `<line x1="0" y1="${y * h}" x2="${w}" y2="${(y + 0.05) * h}" stroke="#5a3216" stroke-width="2" opacity="0.5"/>`).join('')}
    ${balls.map(([, x, y, r]) => `<ellipse cx="${(x + r * 0.3) * w}" cy="${(y + r * 0.9) * h}" rx="${r * w}" ry="${r * 0.3 * h}" fill="#000" opacity="0.35"/>`).join('')}
    ${balls.map(([, x, y, r], i) => `<circle cx="${x * w}" cy="${y * h}" r="${r * w}" fill="url(#b${i})"/>`).join('')}`);
}

/** Buildings with lit windows against a dusk sky (portrait). */
function city(w, h, seed) {
  const rand = random(seed);
  let body = `<defs><linearGradient id="dusk" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#141b3d"/><stop offset="1" stop-color="#c25e3b"/></linearGradient></defs>
    <rect width="${w}" height="${h}" fill="url(#dusk)"/>`;
  for (let x = -10; x < w; x += 25 + rand() * 30) {
    const [bw, top] = [30 + rand() * 40, h * (0.25 + rand() * 0.45)];
    const shade = Math.round(20 + rand() * 40);
    body += `<rect x="${x}" y="${top}" width="${bw}" height="${h - top}" fill="rgb(${shade},${shade},${shade + 15})"/>`;
    for (let y = top + 6; y < h - 8; y += 12) {
      for (let wx = x + 4; wx < x + bw - 6; wx += 9) {
        if (rand() < 0.4) body += `<rect x="${wx}" y="${y}" width="5" height="6" fill="#ffd77a" opacity="${0.5 + rand() / 2}"/>`;
      }
    }
  }
  return svg(w, h, body);
}

/** Flat primary shapes on white, as in a diagram or a toy: sharp edges, few colours (a PNG). */
function shapes(w, h) {
  return svg(w, h, `
    <rect width="${w}" height="${h}" fill="#fafafa"/>
    <circle cx="${0.3 * w}" cy="${0.32 * h}" r="${0.2 * w}" fill="#1f5fd1"/>
    <rect x="${0.52 * w}" y="${0.14 * h}" width="${0.36 * w}" height="${0.36 * h}" fill="#e03a2f" transform="rotate(12 ${0.7 * w} ${0.32 * h})"/>
    <polygon points="${0.5 * w},${0.55 * h} ${0.82 * w},${0.92 * h} ${0.18 * w},${0.92 * h}" fill="#f2b705"/>`);
}

/**
 * Sandstone-like texture: octaves of seeded value noise (small random grids scaled up smoothly)
 * summed, then coloured between two earth tones.
 */
async function texture(w, h, seed) {
  const rand = random(seed);
  const sum = new Float32Array(w * h);
  for (const [cells, weight] of [[4, 0.5], [16, 0.3], [64, 0.2]]) {
    const [gw, gh] = [cells, Math.max(2, Math.round((cells * h) / w))];
    const grid = Buffer.alloc(gw * gh, 0).map(() => 255 * rand());
    const up = await sharp(grid, { raw: { width: gw, height: gh, channels: 1 } }).resize(w, h, { kernel: 'cubic' })
      .extractChannel(0).raw().toBuffer(); // sharp would hand back grey as three channels
    for (let i = 0; i < sum.length; i++) sum[i] += (weight * up[i]) / 255;
  }
  const [dark, light] = [[122, 74, 40], [233, 196, 142]];
  const rgb = Buffer.alloc(w * h * 3);
  for (let i = 0; i < sum.length; i++) {
    for (let c = 0; c < 3; c++) rgb[3 * i + c] = dark[c] + (light[c] - dark[c]) * sum[i];
  }
  return sharp(rgb, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

const jpeg = (image) => image.jpeg({ quality: 82, mozjpeg: true });

async function main() {
  const made = {
    'landscape.jpg': jpeg(await grain(landscape(320, 240), 320, 240, 1)),
    'fruit.jpg': jpeg(await grain(fruit(256, 256), 256, 256, 2)),
    'city.jpg': jpeg(await grain(city(240, 320, 3), 240, 320, 3)),
    'shapes.png': sharp(shapes(224, 224)).png({ palette: true }),
    'texture.jpg': jpeg(sharp(await texture(300, 200, 4))),
    // The real photo, as a JPEG: the PNG fixture is 466 KB.
    'coffee.jpg': jpeg(sharp(COFFEE)),
  };
  let total = 0;
  for (const [name, image] of Object.entries(made)) {
    const { size, width, height } = await image.toFile(path.join(OUT, name));
    total += size;
    console.log(`${name.padEnd(14)} ${width}x${height}  ${(size / 1024).toFixed(1)} KB`);
  }
  console.log(`total ${(total / 1024).toFixed(1)} KB`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
