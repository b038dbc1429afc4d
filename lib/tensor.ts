/** A float32 array with its shape (NCHW for images and blobs, [n, features] for fc blobs). */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** The number of elements of a shape. */
export const elements = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
