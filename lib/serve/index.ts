export { createServer, vggnetPlugin, httpStatus } from './server';
export type { VggnetPlugin, VggnetPluginOptions, VggnetServer } from './server';
export { VggnetService } from './service';
export type { ServeModel, ServeOptions } from './service';
export { Batcher } from './batcher';
export type { BatchRunner, BatcherOptions, SubmitOptions } from './batcher';
export { ServeMetrics } from './metrics';
