// What workers and submitters agree on: the queue's names, a job's id, its progress and its result.
// Both sides import this; nothing here talks to Redis.
import { createHash } from 'node:crypto'

import type { BatchEvent } from '../batch/types.js'

/** The queue used without --queue. */
export const DEFAULT_QUEUE = 'virt-dib'
/** Every job of the queue is a build (BullMQ's job name). */
export const JOB_NAME = 'build'
/** Deliveries of a job whose worker was lost, without --attempts. */
export const DEFAULT_ATTEMPTS = 2

/**
 * A job's id: from its output path, so the same file submitted twice (or by two people) is built
 * once at a time. BullMQ ids must not be integers nor contain ':'.
 */
export function jobIdFor(outputPath: string): string {
  return `build-${createHash('sha256').update(outputPath).digest('hex').slice(0, 32)}`
}

/** The Redis pub/sub channel on which submitters ask workers to stop a running job (its id as the message). */
export function cancelChannel(queue: string): string {
  return `virt-dib:${queue}:cancel`
}

/** The Redis key that marks a job as cancelled (a worker that missed the message checks it at start). */
export function cancelKey(queue: string, jobId: string): string {
  return `virt-dib:${queue}:cancelled:${jobId}`
}

/** How long a cancel mark is kept (a job cancelled while queued may still be picked up this long after). */
export const CANCEL_MARK_SECONDS = 24 * 3600

/**
 * A failed build's summary lines (the batch summary's lines under it: the error, a failed script's
 * last lines), sent by the worker just before it fails the job.
 */
export interface JobFailureEvent {
  kind: 'job-failure'
  build: string
  lines: string[]
}

/** The worker that took a job (sent when it starts it). */
export interface JobTakenEvent {
  kind: 'job-taken'
  build: string
  worker: string
  /** 1 on the first delivery; more after a worker was lost. */
  delivery: number
}

/**
 * One BullMQ progress update: a build's event tagged with the build's name (the layer's base too
 * when a worker builds it for a layer), or one of the job's own.
 */
export type JobEvent = BatchEvent | JobFailureEvent | JobTakenEvent | JobHandedBackEvent

/** The worker is stopping and puts the job back in the queue (sent just before it does). */
export interface JobHandedBackEvent {
  kind: 'job-handed-back'
  build: string
  worker: string
}

/** A job's progress value (job.updateProgress); the sequence number orders events of one job. */
export interface JobProgress {
  seq: number
  event: JobEvent
  /** The delivery (job-taken's) the event belongs to: a cut-off earlier delivery's late events are told apart. */
  delivery?: number
}

/** One output of a finished job, on the storage the workers share. */
export interface JobOutput {
  format: string
  path: string
  size: number
  sha256: string
}

/** A job's return value. */
export interface JobResult {
  build: string
  worker: string
  outputs: JobOutput[]
  /** `<name>.d` if elements left files there (renamed into place like the outputs). */
  extraDataDir?: string
  seconds: number
  /** Phases restored from the worker's step cache. */
  reused: string[]
}

/** Why a job ended without being retried; the failedReason of the job starts with it. */
export const CANCELLED_REASON = 'cancelled by its submitter'

export function isJobProgress(v: unknown): v is JobProgress {
  if (typeof v !== 'object' || v === null) return false
  const p = v as { seq?: unknown; event?: unknown }
  return typeof p.seq === 'number' && typeof p.event === 'object' && p.event !== null
}
