import { strict as assert } from 'node:assert';
import { blobNames, countMacs, countParams, inferShapes, presetArch } from '../../lib/arch';
import { VggError } from '../../lib/errors';

describe('unit: topology', () => {
  it("counts torchvision's parameters for vgg11, vgg13, vgg16, vgg19", () => {
    assert.equal(countParams(presetArch('vgg11')), 132_863_336);
    assert.equal(countParams(presetArch('vgg13')), 133_047_848);
    assert.equal(countParams(presetArch('vgg16')), 138_357_544);
    assert.equal(countParams(presetArch('vgg19')), 143_667_240);
  });

  it("matches the paper's Table 2 (millions) for A, A-LRN, B, C, D, E", () => {
    const millions = ['A', 'A-LRN', 'B', 'C', 'D', 'E'].map((a) => Math.round(countParams(presetArch(a)) / 1e6));
    assert.deepEqual(millions, [133, 133, 133, 134, 138, 144]);
  });

  it('counts batch norm affine parameters in the _bn variants', () => {
    // vgg16_bn: 13 BN layers with weight and bias over 64..512 channels.
    assert.equal(countParams(presetArch('vgg16_bn')), 138_365_992);
  });

  it('counts MACs at 224: vgg11 7.61 G, vgg13 11.31 G, vgg16 15.47 G, vgg19 19.63 G', () => {
    const g = ['vgg11', 'vgg13', 'vgg16', 'vgg19'].map((a) => Number((countMacs(presetArch(a)) / 1e9).toFixed(2)));
    assert.deepEqual(g, [7.61, 11.31, 15.47, 19.63]);
  });

  it('infers every blob shape, both heads, for any input size', () => {
    const d = presetArch('D');
    const fixed = new Map(inferShapes(d, 2, 256, 320, 'fixed').map((b) => [b.name, b.shape]));
    assert.deepEqual(fixed.get('conv1_1'), [2, 64, 256, 320]);
    assert.deepEqual(fixed.get('conv5_3'), [2, 512, 16, 20]);
    assert.deepEqual(fixed.get('pool5'), [2, 512, 8, 10]);
    assert.deepEqual(fixed.get('fc7'), [2, 4096]);
    const dense = new Map(inferShapes(d, 1, 384, 512, 'dense').map((b) => [b.name, b.shape]));
    assert.deepEqual(dense.get('fc8_map'), [1, 1000, 6, 10]);
    assert.deepEqual(dense.get('fc8'), [1, 1000]);
  });

  it('names blobs as the VGG literature does, LRN and 1x1 convs included', () => {
    assert.deepEqual(blobNames(presetArch('A-LRN'), 'fixed').slice(0, 4), ['conv1_1', 'norm1', 'pool1', 'conv2_1']);
    assert.ok(blobNames(presetArch('C'), 'fixed').includes('conv3_3'));
    assert.deepEqual(blobNames(presetArch('D'), 'dense').slice(-5), ['fc6', 'fc7', 'fc8_map', 'fc8', 'prob']);
  });

  it('rejects inputs too small for the head', () => {
    const d = presetArch('D');
    assert.throws(() => inferShapes(d, 1, 16, 16, 'fixed'), (e: VggError) => e.code === 'E_SHAPE' && /too small/.test(e.message));
    assert.doesNotThrow(() => inferShapes(d, 1, 32, 32, 'fixed'));
    assert.throws(() => inferShapes(d, 1, 223, 400, 'dense'), (e: VggError) => e.code === 'E_SHAPE' && /224x224/.test(e.message));
  });

  it('rejects unknown presets with E_ARG', () => {
    assert.throws(() => presetArch('vgg17'), (e: VggError) => e.code === 'E_ARG' && /vgg17/.test(e.message));
  });
});
