export { createServer, vggnetPlugin, httpStatus } from './server';
export type { VggnetPlugin, VggnetPluginOptions, VggnetServer } from './server';
export { VggnetService } from './service';
export type { ServeModel, ServeOptions } from './service';
export { Batcher } from './batcher';
export type { Admission, BatchRunner, BatcherOptions, RefusalReason, SubmitOptions } from './batcher';
export { RunTimes } from './run-times';
export { ServeMetrics } from './metrics';
