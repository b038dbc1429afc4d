export { submitJob, type SubmitOptions, type SubmitResult } from './submit';
export { runWorker, type JobWorker, type WorkerOptions } from './worker';
export { jobStatus, type JobStatus } from './status';
export { mergeJob, type MergeResult } from './merge';
export type { JobSpec } from './spec';
