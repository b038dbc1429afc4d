export { createServer, vggnetPlugin, VggnetService, httpStatus } from './server';
export type { ServeModel, ServeOptions, VggnetPluginOptions } from './server';
export { Batcher } from './batcher';
export type { BatchRunner, BatcherOptions, SubmitOptions } from './batcher';
export { ServeMetrics } from './metrics';
