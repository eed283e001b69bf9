// The build queue's public API (docs/SCALE.md): workers and submitters on BullMQ/Redis. Kept out
// of src/api/index.ts so that a plain build never loads BullMQ.
export { startWorker, DEFAULT_LOCK_DURATION } from './worker.js'
export type { JobEndStatus, WorkerEvent, WorkerHandle, WorkerLifecycleEvent, WorkerOptions } from './worker.js'
export {
  CANCELLED_WAITING_REASON,
  NOT_SUBMITTED,
  RemoteBuildError,
  SubmitAbortedError,
  submitBuilds,
} from './submit.js'
export type { SubmitJobEvent, SubmitOptions, SubmitResult, SubmittedJob } from './submit.js'
export { CANCELLED_REASON, DEFAULT_ATTEMPTS, DEFAULT_QUEUE, jobIdFor } from './protocol.js'
export type { JobEvent, JobOutput, JobProgress, JobResult } from './protocol.js'
export { toPayload, parsePayload, type JobPayload } from './payload.js'
export { QueueConnectionError } from './redis.js'
