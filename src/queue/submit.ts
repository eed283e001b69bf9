// submitBuilds(): every build of a batch becomes one job of the queue (src/queue/protocol.ts); with
// `wait`, the jobs are followed through BullMQ's queue events (progress, completed, failed) and give
// the same events and outcomes as buildMany, and an abort cancels them on their workers.
import { setTimeout as sleep } from 'node:timers/promises'

import { Queue, QueueEvents, type Job } from 'bullmq'
import type { Redis } from 'ioredis'

import type { BatchBuild, BatchSpec } from '../batch/batch-file.js'
import type { BatchEvent, BuildOutcome } from '../batch/types.js'
import type { BuildResult } from '../engine/context.js'
import { BuildAbortedError, VirtDibError } from '../errors.js'
import { toPayload } from './payload.js'
import {
  CANCEL_MARK_SECONDS,
  CANCELLED_REASON,
  DEFAULT_ATTEMPTS,
  DEFAULT_QUEUE,
  JOB_NAME,
  cancelChannel,
  cancelKey,
  jobIdFor,
  type JobEvent,
  type JobOutput,
  type JobResult,
} from './protocol.js'
import { openRedis } from './redis.js'

export interface SubmitOptions {
  /** redis:// or rediss:// URL (a password or ACL user in it). */
  redis: string
  /** Default {@link DEFAULT_QUEUE}. */
  queue?: string
  /** Deliveries of a job whose worker was lost (default {@link DEFAULT_ATTEMPTS}). */
  attempts?: number
  /** Follow the jobs until each one ends: the result then has their outcomes. */
  wait?: boolean
  /** Stops submitting; while waiting, cancels every unfinished job, then rejects with a {@link SubmitAbortedError}. */
  signal?: AbortSignal
  /** The builds' events as buildMany gives them (with `wait`): build-start when a worker takes a job, its build's events, build-end. */
  onEvent?: (e: BatchEvent) => void
  /** Each job as it is submitted (or found already queued). */
  onJob?: (e: SubmitJobEvent) => void
  /** How long an abort waits for running jobs to end on their workers (default 20 s). */
  cancelWaitMs?: number
  /** How long the first connection to Redis may take (default 5 s). */
  connectTimeoutMs?: number
  /**
   * While waiting, how often each unfinished job's state is read (default 15 s): a job whose end
   * came by no event (Redis restarted, the queue emptied, its events trimmed) ends all the same.
   */
  pollMs?: number
}

/**
 * A job of the submit: `job-added` when it was put on the queue, `already-queued` when a job of
 * the same output was waiting or running (it is followed, not added again). `elapsed`: seconds since
 * the submit started.
 */
export interface SubmitJobEvent {
  kind: 'job-added' | 'already-queued'
  build: string
  jobId: string
  /** For `already-queued`: BullMQ's state of the job found (waiting, active, delayed…). */
  state?: string
  elapsed: number
}

export interface SubmittedJob {
  name: string
  jobId: string
  /** False: a job of the same output was already waiting or running; it is followed instead. */
  added: boolean
}

export interface SubmitResult {
  jobs: SubmittedJob[]
  /** With `wait`: one outcome per build, in the batch's order. */
  outcomes?: BuildOutcome[]
}

/** A job that failed on its worker: the failedReason, and the lines the batch summary shows under it. */
export class RemoteBuildError extends VirtDibError {
  override name = 'RemoteBuildError'
  readonly jobId: string
  /** The worker's describeFailure lines (`error: …`, a failed script's last lines), or `error: <reason>`. */
  readonly summaryLines: string[]

  constructor(message: string, jobId: string, summaryLines?: readonly string[]) {
    super(message)
    this.jobId = jobId
    this.summaryLines = summaryLines && summaryLines.length > 0 ? [...summaryLines] : [`error: ${message}`]
  }
}

/** An aborted submit (a BuildAbortedError): what became of each job, for the summary. */
export class SubmitAbortedError extends BuildAbortedError {
  readonly jobs: SubmittedJob[]
  readonly outcomes: BuildOutcome[]

  constructor(reason: unknown, jobs: SubmittedJob[], outcomes: BuildOutcome[]) {
    const r = reason instanceof BuildAbortedError ? reason : undefined
    super(r?.message ?? 'the submit was cancelled', {
      cause: reason,
      ...(r?.signal !== undefined ? { signal: r.signal } : {}),
    })
    this.jobs = jobs
    this.outcomes = outcomes
  }
}

/** Why a job that never reached a worker is skipped after a cancel. */
export const CANCELLED_WAITING_REASON = `${CANCELLED_REASON} before a worker took it`

/** Why a build the abort came before has no job. */
export const NOT_SUBMITTED = 'not submitted: the submit was stopped'

/** Why a job someone queued before this submit is skipped after a cancel (it is left to run). */
export const NOT_FOLLOWED = 'no longer followed (submitted earlier, not by this submit)'

/** Why a followed job fails when its state can no longer be read. */
export const GONE_REASON = 'the job is no longer in the queue'

const DEFAULT_CANCEL_WAIT_MS = 20_000
const DEFAULT_POLL_MS = 15_000
/** A job's end read from its state waits this long for its event (the events' stream may lag). */
const MAX_GRACE_MS = 2000
/** BullMQ states of a job not yet ended: it is followed rather than added again. */
const UNFINISHED = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'])
/** States a cancel removes the job from (no worker holds it). */
const REMOVABLE = new Set(['waiting', 'delayed', 'prioritized', 'waiting-children'])
/** Out-of-order progress held back at most: past it, a lost sequence number is skipped. */
const MAX_PENDING = 64
const KEEP_SECONDS = 7 * 86400

/** One job being followed. */
interface Followed {
  index: number
  build: BatchBuild
  jobId: string
  added: boolean
  /**
   * The queue's events are this job's: for a job we add, once its 'added' (or 'duplicated': someone
   * added it first) event came; before it, they are the replaced job's (its removal, a late end).
   */
  armed: boolean
  started: boolean
  startedAt: number | undefined
  /** The delivery of the last job-taken seen (0: none). */
  delivery: number
  /** The progress sequence number expected next in this delivery (undefined: joined mid-way). */
  next: number | undefined
  /** Out-of-order events by sequence number; null: a malformed one, which only fills its place. */
  pending: Map<number, JobEvent | null>
  /** Its worker handed it back (it was stopping): the next delivery is no lost worker's. */
  handedBack: boolean
  failureLines: string[] | undefined
  worker: string | undefined
  reused: string[]
  outcome: BuildOutcome | undefined
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string')

type Check = (v: unknown) => boolean
const str: Check = (v) => typeof v === 'string'
const num: Check = (v) => typeof v === 'number' && Number.isFinite(v)
const count: Check = (v) => Number.isSafeInteger(v) && (v as number) >= 1
const opt =
  (c: Check): Check =>
  (v) =>
    v === undefined || c(v)
const oneOf =
  (...values: string[]): Check =>
  (v) =>
    typeof v === 'string' && values.includes(v)
const where = oneOf('host', 'appliance', 'chroot')

/**
 * The fields each kind of event must have (src/events.ts, src/batch/types.ts, protocol.ts): the
 * progress comes from Redis, and one the renderer cannot take must not reach it.
 */
const EVENT_FIELDS: Record<string, Record<string, Check>> = {
  'build-start': { elapsed: num },
  'build-end': { elapsed: num, status: oneOf('ok', 'failed', 'skipped'), seconds: num, reason: opt(str) },
  info: { elapsed: num, text: str },
  warning: { elapsed: num, text: str },
  progress: { elapsed: num, text: str },
  debug: { elapsed: num, text: str },
  'appliance-log': { elapsed: num, text: str },
  'phase-start': { elapsed: num, hook: str, where },
  'phase-end': { elapsed: num, hook: str, where, seconds: num, status: num, scripts: isStrings },
  'script-start': { elapsed: num, hook: str, script: str },
  'script-output': { elapsed: num, hook: str, script: str, line: str },
  'script-end': { elapsed: num, hook: str, script: str, status: num, seconds: num },
  step: { elapsed: num, name: str, seconds: num },
  output: { elapsed: num, format: str, path: str, size: num, md5: opt(str), sha256: opt(str) },
  'cache-hit': { elapsed: num, steps: isStrings, key: str, ageSeconds: num },
  'cache-miss': { elapsed: num, step: str, reason: str },
  'cache-store': { elapsed: num, step: str, key: str, bytes: num, seconds: num, writeSeconds: num },
  'job-failure': { lines: isStrings },
  'job-taken': { worker: str, delivery: count },
  'job-handed-back': { worker: str },
}

/** `v` if it is an event of a known kind with the fields that kind needs. */
export function validEvent(v: unknown): JobEvent | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined
  const e = v as Record<string, unknown>
  const kind = e['kind']
  const fields = typeof kind === 'string' && Object.hasOwn(EVENT_FIELDS, kind) ? EVENT_FIELDS[kind] : undefined
  if (fields === undefined) return undefined
  if (!opt(str)(e['build'])) return undefined
  for (const [name, check] of Object.entries(fields)) if (!check(e[name])) return undefined
  return v as JobEvent
}

/**
 * A progress value read from Redis: undefined when it is no JobProgress at all; its event undefined
 * when only the event is malformed (its sequence number still counts: later ones are not held back).
 */
export function parseProgress(
  v: unknown,
): { seq: number; delivery: number | undefined; event: JobEvent | undefined } | undefined {
  if (typeof v !== 'object' || v === null) return undefined
  const p = v as { seq?: unknown; delivery?: unknown; event?: unknown }
  if (!Number.isSafeInteger(p.seq) || (p.seq as number) < 0 || !opt(count)(p.delivery)) return undefined
  return { seq: p.seq as number, delivery: p.delivery as number | undefined, event: validEvent(p.event) }
}

type Progress = NonNullable<ReturnType<typeof parseProgress>>

/** A value for a debug line: short, on one line. */
function preview(v: unknown): string {
  let t: string
  try {
    t = JSON.stringify(v) ?? String(v)
  } catch {
    t = String(v)
  }
  return t.length > 120 ? `${t.slice(0, 120)}…` : t
}

/** The failure lines a job's last progress holds, if it was its job-failure event. */
function failureLinesOf(progress: unknown): string[] | undefined {
  const e = parseProgress(progress)?.event
  return e?.kind === 'job-failure' ? e.lines : undefined
}

/** A job's return value as a build's result (JSON from Redis: checked, not trusted). */
function resultOf(rv: unknown): { result: BuildResult; reused: string[] } {
  const r = (typeof rv === 'object' && rv !== null ? rv : {}) as Partial<JobResult>
  const outputs = (Array.isArray(r.outputs) ? (r.outputs as unknown[]) : [])
    .filter((o): o is JobOutput => typeof o === 'object' && o !== null && str((o as JobOutput).path))
    .map((o) => ({ format: o.format, path: o.path, size: o.size, sha256: o.sha256 }))
  const result: BuildResult = {
    outputs,
    seconds: typeof r.seconds === 'number' ? r.seconds : 0,
    ...(typeof r.extraDataDir === 'string' ? { extraDataDir: r.extraDataDir } : {}),
  }
  return { result, reused: isStrings(r.reused) ? r.reused : [] }
}

/** Resolves with `p`, or with `undefined` after `ms` (Redis gone: the cancel must not hang). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  const ac = new AbortController()
  try {
    return await Promise.race([p, sleep(Math.max(0, ms), undefined, { signal: ac.signal, ref: false })])
  } finally {
    ac.abort()
  }
}

/**
 * Puts every build of `spec` on the queue (a layer's job carries its base: any worker can build it
 * or reuse it). A job's id comes from its output path: a job of the same output still waiting or
 * running is followed, not added again; one that ended is replaced. With `wait`, resolves once every
 * job ended, with their outcomes (a failed job's error is a {@link RemoteBuildError}).
 */
export async function submitBuilds(spec: BatchSpec, opts: SubmitOptions): Promise<SubmitResult> {
  const t0 = Date.now()
  const elapsed = () => (Date.now() - t0) / 1000
  const queueName = opts.queue ?? DEFAULT_QUEUE
  if (queueName === '' || queueName.includes(':')) {
    throw new VirtDibError(`the queue name ‘${queueName}’ must not be empty nor contain ‘:’`)
  }
  const attempts = opts.attempts ?? DEFAULT_ATTEMPTS
  if (!Number.isSafeInteger(attempts) || attempts < 1) {
    throw new VirtDibError(`attempts must be a whole number greater than zero, not ${attempts}`)
  }
  const { signal } = opts
  if (signal?.aborted) {
    const outcomes = spec.builds.map((b): BuildOutcome => ({ name: b.name, status: 'skipped', reason: NOT_SUBMITTED }))
    throw new SubmitAbortedError(signal.reason, [], outcomes)
  }

  // First: an unreachable Redis is one line, before anything subscribes.
  const client = await openRedis(opts.redis, { timeoutMs: opts.connectTimeoutMs ?? 5000 })
  const queue = new Queue(queueName, { connection: client })
  queue.on('error', () => undefined) // the client reconnects on its own
  let events: QueueEvents | undefined
  let onAbort: () => void = () => undefined
  const whenAborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted')
    if (signal?.aborted) onAbort()
    else signal?.addEventListener('abort', onAbort, { once: true })
  })
  const session = {
    client,
    queue,
    queueName,
    attempts,
    elapsed,
    aborted: whenAborted,
    setEvents: (e: QueueEvents) => (events = e),
  }
  try {
    return await run(spec, opts, session)
  } finally {
    signal?.removeEventListener('abort', onAbort)
    const closing = Promise.allSettled([events?.close(), queue.close()])
    // A Redis gone meanwhile would keep QUIT waiting forever: the connections are then dropped.
    if ((await within(closing, 2000)) === undefined) void events?.disconnect()
    client.disconnect()
  }
}

interface Session {
  client: Redis
  queue: Queue
  queueName: string
  attempts: number
  elapsed: () => number
  /** Resolves when the signal aborts (never without one). */
  aborted: Promise<'aborted'>
  setEvents: (e: QueueEvents) => void
}

async function run(spec: BatchSpec, opts: SubmitOptions, s: Session): Promise<SubmitResult> {
  const { client, queue, queueName, elapsed } = s
  const { signal } = opts
  const emit = (e: BatchEvent) => {
    try {
      opts.onEvent?.(e)
    } catch {
      // A failing listener must not break the submit.
    }
  }
  const emitJob = (e: SubmitJobEvent) => {
    try {
      opts.onJob?.(e)
    } catch {
      // As above.
    }
  }
  const wait = opts.wait === true
  const abortedP = s.aborted
  const followed: Followed[] = []
  const byId = new Map<string, Followed>()
  let settle: () => void = () => undefined
  const allDone = new Promise<void>((resolve) => (settle = resolve))
  let adding = true
  let cancelling = false
  const checkDone = () => {
    if (!adding && followed.every((f) => f.outcome !== undefined)) settle()
  }

  const secondsOf = (f: Followed) => (f.startedAt === undefined ? 0 : (Date.now() - f.startedAt) / 1000)
  const start = (f: Followed) => {
    if (f.started || f.outcome) return
    f.started = true
    f.startedAt = Date.now()
    emit({ kind: 'build-start', build: f.build.name, elapsed: elapsed() })
  }
  const finish = (f: Followed, outcome: BuildOutcome) => {
    if (f.outcome) return
    if (outcome.status !== 'skipped') start(f)
    f.outcome = outcome
    emit({
      kind: 'build-end',
      build: f.build.name,
      elapsed: elapsed(),
      status: outcome.status,
      seconds: outcome.status === 'skipped' ? 0 : outcome.seconds,
      ...(outcome.status === 'failed' ? { reason: messageOf(outcome.error) } : {}),
      ...(outcome.status === 'skipped' ? { reason: outcome.reason } : {}),
    })
    checkDone()
  }
  const finishOk = (f: Followed, returnvalue: unknown) => {
    const { result, reused } = resultOf(returnvalue)
    for (const r of reused) if (!f.reused.includes(r)) f.reused.push(r)
    finish(f, { name: f.build.name, status: 'ok', result, seconds: result.seconds, reused: f.reused })
  }
  const finishFailed = (f: Followed, reason: string, seconds = secondsOf(f)) => {
    const error = new RemoteBuildError(reason, f.jobId, f.failureLines)
    finish(f, { name: f.build.name, status: 'failed', error, seconds, reused: f.reused })
  }

  /** Something of a job's progress that could not be used (seen only with -v). */
  const note = (f: Followed, text: string) => emit({ kind: 'debug', build: f.build.name, elapsed: secondsOf(f), text })

  /** One of the job's events, in order. */
  const handle = (f: Followed, e: JobEvent) => {
    if (f.outcome) return
    switch (e.kind) {
      case 'job-taken':
        return
      case 'job-failure':
        f.failureLines = e.lines
        return
      case 'job-handed-back':
        f.handedBack = true
        emit({
          kind: 'info',
          build: f.build.name,
          elapsed: secondsOf(f),
          text: `handed back to the queue by ${e.worker}, which is stopping`,
        })
        return
      case 'build-start':
        // The job's own start is ours (from job-taken); a layer's base says nothing until it ends.
        return
      case 'build-end':
        if (e.build === f.build.name) return // ours comes with the job's end
        emit({
          kind: 'info',
          build: e.build,
          elapsed: e.elapsed,
          text:
            e.status === 'ok'
              ? `finished in ${e.seconds.toFixed(1)} s`
              : `${e.status} after ${e.seconds.toFixed(1)} s: ${e.reason ?? ''}`,
        })
        return
      default:
        if (e.kind === 'cache-hit') for (const step of e.steps) if (!f.reused.includes(step)) f.reused.push(step)
        emit({ ...e, build: typeof e.build === 'string' ? e.build : f.build.name })
    }
  }
  const drain = (f: Followed) => {
    while (f.next !== undefined) {
      if (!f.pending.has(f.next)) {
        if (f.pending.size <= MAX_PENDING) return
        f.next = Math.min(...f.pending.keys()) // a lost update: go on after it
        continue
      }
      const e = f.pending.get(f.next)
      f.pending.delete(f.next)
      f.next++
      if (e) handle(f, e)
    }
  }
  const onProgress = (f: Followed, p: Progress) => {
    const e = p.event
    if (e?.kind === 'job-taken') {
      // A later delivery starts a new sequence; an older or repeated one is dropped.
      if (e.delivery <= f.delivery || (p.delivery !== undefined && p.delivery !== e.delivery)) return
      const again = f.delivery > 0 || e.delivery > 1
      // Handed back (its worker was stopping): not lost. Its event may still wait for a missing one.
      const handedBack = f.handedBack || [...f.pending.values()].some((x) => x?.kind === 'job-handed-back')
      f.handedBack = false
      if (again) f.reused.length = 0 // the earlier delivery's cache hits say nothing of this one
      f.delivery = e.delivery
      f.worker = e.worker
      f.next = p.seq + 1
      // Tagged with their delivery, the events held are all the earlier one's.
      for (const seq of f.pending.keys()) if (p.delivery !== undefined || seq <= p.seq) f.pending.delete(seq)
      start(f)
      if (!f.outcome) {
        const build = f.build.name
        emit(
          !again
            ? { kind: 'info', build, elapsed: 0, text: `taken by the worker ${e.worker}` }
            : handedBack
              ? {
                  kind: 'info',
                  build,
                  elapsed: secondsOf(f),
                  text: `taken again by ${e.worker} after its worker stopped (delivery ${e.delivery})`,
                }
              : {
                  kind: 'warning',
                  build,
                  elapsed: secondsOf(f),
                  text: `its worker was lost: taken again by ${e.worker} (delivery ${e.delivery})`,
                },
        )
      }
      drain(f)
      return
    }
    if (p.delivery !== undefined) {
      if (f.delivery === 0)
        f.delivery = p.delivery // joined while it was running: the delivery under way
      else if (p.delivery !== f.delivery) return // a cut-off earlier delivery's late event
    }
    f.next ??= p.seq // joined while it was running
    if (p.seq < f.next || f.pending.has(p.seq)) return
    f.pending.set(p.seq, e ?? null)
    drain(f)
  }

  /** The job's state: its end (to apply) if it ended or is gone. */
  const readState = async (f: Followed): Promise<{ state: string | undefined; end?: () => void }> => {
    const job = await queue.getJob(f.jobId)
    if (job === undefined) return { state: undefined, end: () => finishFailed(f, GONE_REASON) }
    const state = await job.getState()
    if (state === 'completed') return { state, end: () => finishOk(f, job.returnvalue) }
    if (state !== 'failed') return { state }
    const end = () => {
      f.failureLines ??= failureLinesOf(job.progress)
      const took = job.finishedOn !== undefined && job.processedOn !== undefined && f.startedAt === undefined
      finishFailed(f, job.failedReason || 'failed', took ? (job.finishedOn! - job.processedOn!) / 1000 : secondsOf(f))
    }
    return { state, end }
  }
  const pollMs = Math.max(10, opts.pollMs ?? DEFAULT_POLL_MS)
  let polling = false
  let reading = false
  /** Every unfinished job's state read again: an end no event brought is applied. */
  const recheck = async () => {
    if (!polling || reading || cancelling) return
    reading = true
    try {
      const ended: [Followed, () => void][] = []
      await Promise.all(
        followed
          .filter((f) => !f.outcome)
          .map(async (f) => {
            const { end } = await readState(f).catch(() => ({ end: undefined })) // Redis away: next time
            if (end) ended.push([f, end])
          }),
      )
      if (ended.length === 0) return
      // Its events (the build's last lines, its end) may only lag behind: they are given time to come first.
      await sleep(Math.min(MAX_GRACE_MS, pollMs / 2), undefined, { ref: false })
      for (const [f, end] of ended) if (!f.outcome && !cancelling) end()
    } finally {
      reading = false
    }
  }
  const recheckSoon = () => void recheck().catch(() => undefined)

  // Subscribed before anything is added or read: from the stream's last event on, nothing is missed.
  if (wait) {
    const last = await client.xrevrange(queue.keys.events!, '+', '-', 'COUNT', 1)
    const events = new QueueEvents(queueName, { connection: client, lastEventId: last[0]?.[0] ?? '0-0' })
    s.setEvents(events)
    // Its connection reconnects on its own; events may have been missed meanwhile.
    events.on('error', recheckSoon)
    const ours = (jobId: string) => {
      const f = byId.get(jobId)
      return f?.armed ? f : undefined
    }
    /** A listener's body: a throw would end the events' loop for good (the wait would never end). */
    const guarded = (body: () => void) => {
      try {
        body()
      } catch {
        recheckSoon()
      }
    }
    const arm = ({ jobId }: { jobId: string }) =>
      guarded(() => {
        const f = byId.get(jobId)
        if (f) f.armed = true
      })
    events.on('added', arm)
    events.on('duplicated', arm)
    events.on('progress', ({ jobId, data }) =>
      guarded(() => {
        const f = ours(jobId)
        if (!f || f.outcome) return
        const p = parseProgress(data)
        if (p === undefined) return note(f, `dropped a progress update that is not virt-dib's: ${preview(data)}`)
        if (p.event === undefined) note(f, `dropped a malformed progress event: ${preview(data)}`)
        onProgress(f, p)
      }),
    )
    events.on('completed', ({ jobId, returnvalue }) =>
      guarded(() => {
        const f = ours(jobId)
        if (f) finishOk(f, returnvalue)
      }),
    )
    events.on('failed', ({ jobId, failedReason }) =>
      guarded(() => {
        const f = ours(jobId)
        if (f) finishFailed(f, typeof failedReason === 'string' && failedReason !== '' ? failedReason : 'failed')
      }),
    )
    events.on('removed', ({ jobId }) =>
      guarded(() => {
        const f = ours(jobId)
        if (f && !f.outcome && !cancelling) finishFailed(f, 'the job was removed from the queue (cancelled elsewhere)')
      }),
    )
    await Promise.race([events.waitUntilReady(), abortedP])
  }

  const jobs: SubmittedJob[] = []
  for (const [index, build] of spec.builds.entries()) {
    if (signal?.aborted) break
    // A batch build always has its output path (batch-file.ts requires a name).
    if (build.options.name === undefined) throw new Error(`internal error: ‘${build.name}’ has no output name`)
    const jobId = jobIdFor(build.options.name)
    const existing = await queue.getJob(jobId)
    const state = existing ? await existing.getState() : undefined
    let added = !(existing && state !== undefined && UNFINISHED.has(state))
    if (added && existing) {
      // An ended job of the same output is replaced. It cannot be removed only if a worker holds
      // it: someone resubmitted it meanwhile, and it is followed.
      added = await existing.remove().then(
        () => true,
        () => false,
      )
    }
    const f: Followed = {
      index,
      build,
      jobId,
      added,
      armed: !added,
      started: false,
      startedAt: undefined,
      delivery: 0,
      next: added ? 1 : undefined,
      pending: new Map(),
      handedBack: false,
      failureLines: undefined,
      worker: undefined,
      reused: [],
      outcome: undefined,
    }
    // Followed before it is added: its 'added' event may come before queue.add returns.
    followed.push(f)
    byId.set(jobId, f)
    if (added) {
      // Its cancel mark must not fail the new job.
      await client.del(cancelKey(queueName, jobId))
      await queue.add(JOB_NAME, toPayload(spec, build), {
        jobId,
        attempts: s.attempts,
        removeOnComplete: { age: KEEP_SECONDS },
        removeOnFail: { age: KEEP_SECONDS },
      })
    }
    jobs.push({ name: build.name, jobId, added })
    emitJob({
      kind: added ? 'job-added' : 'already-queued',
      build: build.name,
      jobId,
      ...(added ? {} : { state: state ?? 'active' }),
      elapsed: elapsed(),
    })
  }

  adding = false
  checkDone()
  if (!wait && !signal?.aborted) return { jobs }

  /**
   * Cancels every unfinished job this submit added: queued ones removed, running ones aborted on
   * their workers. The jobs it only followed are someone else's: they are left to run.
   */
  const cancel = async () => {
    cancelling = true
    for (const f of followed) {
      if (!f.outcome && !f.added) finish(f, { name: f.build.name, status: 'skipped', reason: NOT_FOLLOWED })
    }
    const deadline = Date.now() + (opts.cancelWaitMs ?? DEFAULT_CANCEL_WAIT_MS)
    const left = () => deadline - Date.now()
    const open = followed.filter((f) => !f.outcome)
    const skip = (f: Followed) => finish(f, { name: f.build.name, status: 'skipped', reason: CANCELLED_WAITING_REASON })
    const stop = async (f: Followed) => {
      const job: Job | undefined = await queue.getJob(f.jobId)
      if (job === undefined) return skip(f)
      const state = await job.getState()
      if (state === 'completed') return finishOk(f, job.returnvalue)
      if (state === 'failed') {
        f.failureLines ??= failureLinesOf(job.progress)
        return finishFailed(f, job.failedReason || 'failed')
      }
      if (REMOVABLE.has(state)) {
        const removed = await job.remove().then(
          () => true,
          () => false, // a worker took it meanwhile: the mark or the message stops it there
        )
        if (removed) return skip(f)
      }
      await client.publish(cancelChannel(queueName), f.jobId)
    }
    const stopAll = async () => {
      // The marks first: a worker that takes one of the jobs from now on fails it at once.
      await Promise.all(open.map((f) => client.set(cancelKey(queueName, f.jobId), '1', 'EX', CANCEL_MARK_SECONDS)))
      await Promise.allSettled(open.map(stop))
    }
    await within(stopAll(), left())
    if (wait) await within(allDone, left())
    const seconds = (opts.cancelWaitMs ?? DEFAULT_CANCEL_WAIT_MS) / 1000
    for (const f of followed) {
      if (f.outcome) continue
      if (!wait) finish(f, { name: f.build.name, status: 'skipped', reason: CANCELLED_WAITING_REASON })
      else {
        const where = f.worker !== undefined ? `on ${f.worker}` : 'on its worker'
        finishFailed(f, `the job did not end within ${seconds} s of the cancel: it may still be running ${where}`)
      }
    }
    // Builds the abort came before were never submitted.
    const outcomes = spec.builds.map((b, i): BuildOutcome => {
      const outcome = followed[i]?.outcome
      if (outcome) return outcome
      emit({
        kind: 'build-end',
        build: b.name,
        elapsed: elapsed(),
        status: 'skipped',
        seconds: 0,
        reason: NOT_SUBMITTED,
      })
      return { name: b.name, status: 'skipped', reason: NOT_SUBMITTED }
    })
    throw new SubmitAbortedError(signal?.reason, jobs, outcomes)
  }

  if (signal?.aborted) return cancel()

  // Jobs that ended before the subscription, or are running already, are read once.
  await Promise.all(
    followed.map(async (f) => {
      const { state, end } = await readState(f)
      if (f.outcome) return
      if (end) return end()
      if (state === 'active') start(f)
      else if (f.delivery === 0) f.next ??= 1
    }),
  )

  // Then again every pollMs, and after an error of the events' connection.
  polling = true
  const timer = setInterval(recheckSoon, pollMs)
  try {
    const r = await Promise.race([allDone, abortedP])
    if (r === 'aborted' && followed.some((f) => !f.outcome)) return await cancel()
    return { jobs, outcomes: followed.map((f) => f.outcome!) }
  } finally {
    clearInterval(timer)
    polling = false
  }
}
