// startWorker(): takes build jobs from the queue (BullMQ) and runs each with buildMany, the engine
// of `virt-dib batch`. A job's outputs are written in a staging folder and moved into place only
// when the build succeeded and the worker still holds the job's lock; a cancel reaches the worker
// through Redis pub/sub; a closing worker hands its running jobs back to the queue at once.
import { randomBytes } from 'node:crypto'
import { mkdir, rm, stat } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { basename, dirname, join, relative } from 'node:path'

import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq'
import type { Redis } from 'ioredis'

import type { BuildOptions } from '../api/options.js'
import { describeFailure } from '../batch/describe-failure.js'
import type { BatchPlanners } from '../batch/plan-batch.js'
import { buildMany, type RunPlan } from '../batch/run-many.js'
import type { BatchEvent, BuildManyOptions, BuildOutcome, ManyBuild } from '../batch/types.js'
import type { BuildResult } from '../engine/context.js'
import { BuildAbortedError, VirtDibError } from '../errors.js'
import { setChildrenDieWithParent } from '../host/spawn.js'
import { refusedPath, resolveAllowed, type AllowedFolders } from './allowed.js'
import { BatchFileError, parsePayload } from './payload.js'
import {
  CANCELLED_REASON,
  DEFAULT_ATTEMPTS,
  DEFAULT_QUEUE,
  cancelChannel,
  cancelKey,
  jobIdFor,
  type JobEvent,
  type JobHandedBackEvent,
  type JobOutput,
  type JobProgress,
  type JobResult,
} from './protocol.js'
import { openRedis } from './redis.js'
import { WorkDir, moveIntoPlace, removeEarlierStaging, sha256File, stagingDirFor, sweepDeadWorkers } from './staging.js'

/** Why a job's run ended without an outcome of its own. */
export type JobEndStatus = 'ok' | 'failed' | 'cancelled' | 'handed-back'

/** The worker's own events, beside its builds' (JobEvent, tagged with the build). */
export type WorkerLifecycleEvent =
  | { kind: 'ready'; worker: string; queue: string; workDir: string }
  | { kind: 'job-start'; jobId: string; build: string; delivery: number }
  | { kind: 'job-end'; jobId: string; build: string; status: JobEndStatus; reason?: string; result?: JobResult }
  /** Something about the worker itself (a sweep that failed, a Redis error): it keeps running. */
  | { kind: 'worker-warning'; text: string }
  /** A dead worker's work folder was swept. */
  | { kind: 'worker-info'; text: string }

/** A handed-back job is said by its job-end; job-handed-back goes to the submitter only. */
export type WorkerEvent = Exclude<JobEvent, JobHandedBackEvent> | WorkerLifecycleEvent

export interface WorkerOptions extends BatchPlanners {
  /** redis:// or rediss:// URL (a password or ACL user in it). */
  redis: string
  queue?: string
  /** Jobs at once (default 1). */
  concurrency?: number
  /** The step cache of this machine's builds. */
  cache?: BuildManyOptions['cache']
  /** Folders a job's element paths and -B lib must be in. */
  allowElements: string[]
  /** Folders a job's output and image cache must be in. */
  allowOutput: string[]
  /** ms a job's lock lasts unrenewed (default 30 s): a dead worker's job is delivered again after about this long. */
  lockDuration?: number
  /** Default `<host>.<pid>`. */
  id?: string
  /** Where the work folders of this host's workers are (default `$TMPDIR/virt-dib-worker`). */
  workRoot?: string
  /** libguestfs verbose messages as events (virt-dib worker -v). */
  verbose?: boolean
  onEvent?: (event: WorkerEvent) => void
  /** Tests: a fake build through the engine. */
  run?: RunPlan
  /** Tests: how long Redis may take to answer at start (default 5 s). */
  connectTimeoutMs?: number
}

export interface WorkerHandle {
  id: string
  /** Settles once the worker has closed (its connections too). */
  closed: Promise<void>
  /**
   * Stops taking jobs and closes. Running jobs end first; with `handBack` their builds are aborted
   * and the jobs go back to the queue at once, for another worker.
   */
  close(o?: { handBack?: boolean }): Promise<void>
}

/** Events sent to the submitter as job progress: not the per-line ones (too many writes). */
const FORWARDED = new Set<string>([
  'build-start',
  'build-end',
  'phase-start',
  'phase-end',
  'script-start',
  'script-end',
  'step',
  'output',
  'cache-hit',
  'cache-miss',
  'cache-store',
  'info',
  'warning',
])

/** How long a finishing job waits for its progress updates to reach Redis. */
const FLUSH_MS = 5000
/**
 * How long one of the worker's own Redis calls may take (a hand-back, a lock extension, a cancel
 * check, a quit): the client retries for ever while Redis is gone, and a closing worker must end.
 */
const REDIS_MS = 5000
export const DEFAULT_LOCK_DURATION = 30_000
/** The same worker warning is said at most once in this long. */
const WARNING_REPEAT_MS = 10_000

type StopWhy = 'cancel' | 'hand-back' | 'lock-lost'

interface Running {
  jobId: string
  controller: AbortController
  why: StopWhy | undefined
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** Redis did not answer in time. */
class RedisTimeout extends VirtDibError {}

/** `p`, or a RedisTimeout after `ms` (`p` goes on; its late rejection is ignored). */
function within<T>(p: Promise<T>, what: string, ms = REDIS_MS): Promise<T> {
  p.catch(() => undefined)
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RedisTimeout(`Redis did not answer within ${ms / 1000} s (${what})`)), ms)
  })
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}

/** Resolves after `ms`. */
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** A job's failure: the lines sent to its submitter, and the failed reason. */
class JobFailure extends Error {
  constructor(
    message: string,
    readonly lines: string[],
  ) {
    super(message)
  }
}

const failure = (error: unknown, message = messageOf(error)) => new JobFailure(message, describeFailure(error))
const refused = (message: string) => new JobFailure(message, [`error: ${message}`])

/** Workers open in this process: host tools die with it while there is one. */
let openWorkers = 0

/** Starts a worker: it connects (or rejects in one line), sweeps what dead workers left, then takes jobs. */
export async function startWorker(opts: WorkerOptions): Promise<WorkerHandle> {
  const queue = opts.queue ?? DEFAULT_QUEUE
  const host = hostname()
  const id = opts.id ?? `${host}.${process.pid}`
  const lockDuration = opts.lockDuration ?? DEFAULT_LOCK_DURATION
  const workRoot = opts.workRoot ?? join(tmpdir(), 'virt-dib-worker')
  const lastSaid = new Map<string, number>()
  const emit = (e: WorkerEvent) => {
    // Redis gone: BullMQ says so on every retry; once every few seconds is enough.
    if (e.kind === 'worker-warning') {
      const now = Date.now()
      if (now - (lastSaid.get(e.text) ?? -Infinity) < WARNING_REPEAT_MS) return
      lastSaid.set(e.text, now)
    }
    try {
      opts.onEvent?.(e)
    } catch {
      // A failing listener must not break the worker.
    }
  }
  const allowed: AllowedFolders = await resolveAllowed({ elements: opts.allowElements, output: opts.allowOutput })
  const client = await openRedis(
    opts.redis,
    opts.connectTimeoutMs !== undefined ? { timeoutMs: opts.connectTimeoutMs } : {},
  )
  const sub = client.duplicate()
  let workDir: WorkDir
  try {
    workDir = await WorkDir.open(workRoot, host)
    await subscribe(sub, cancelChannel(queue))
  } catch (e) {
    sub.disconnect()
    client.disconnect()
    throw e
  }
  // Host tools (and the phase runner's scripts) die with the worker: a SIGKILLed worker leaves nothing.
  if (openWorkers++ === 0) setChildrenDieWithParent(true)

  let sweeping: Promise<void> = Promise.resolve()
  const sweep = () => {
    sweeping = sweeping.then(async () => {
      const r = await sweepDeadWorkers(workRoot, host, { self: workDir.dir })
      for (const d of r.swept) emit({ kind: 'worker-info', text: `removed ${d}, left by a dead worker` })
      for (const p of r.problems) emit({ kind: 'worker-warning', text: p })
    })
    return sweeping
  }
  await sweep()

  const running = new Map<string, Running>()
  let handingBack = false
  const stop = (r: Running, why: StopWhy, text: string) => {
    r.why ??= why
    r.controller.abort(new BuildAbortedError(text))
  }
  sub.on('message', (_channel: string, jobId: string) => {
    const r = running.get(jobId)
    if (r) stop(r, 'cancel', CANCELLED_REASON)
  })

  const deps: Deps = { queue, id, lockDuration, workDir, allowed, opts, emit, client, stop }
  const idle: (() => void)[] = []
  const whenIdle = () => (running.size === 0 ? Promise.resolve() : new Promise<void>((r) => idle.push(r)))
  const processor = async (job: Job, token?: string): Promise<JobResult> => {
    const jobId = job.id ?? ''
    const r: Running = { jobId, controller: new AbortController(), why: undefined }
    if (handingBack) r.why = 'hand-back'
    running.set(jobId, r)
    try {
      return await processJob(job, token ?? '', r, deps)
    } finally {
      running.delete(jobId)
      if (running.size === 0) for (const f of idle.splice(0)) f()
      void sweep()
    }
  }

  const worker = new Worker(queue, processor, {
    name: id,
    connection: client,
    concurrency: opts.concurrency ?? 1,
    lockDuration,
    stalledInterval: lockDuration,
    // The worker counts lost deliveries itself (against the job's attempts): BullMQ never fails a stalled job.
    maxStalledCount: 1000,
    autorun: false,
  })
  worker.on('error', (e) => emit({ kind: 'worker-warning', text: `queue: ${messageOf(e)}` }))
  worker.on('lockRenewalFailed', (ids) => {
    for (const jobId of ids) {
      const r = running.get(jobId)
      if (r) stop(r, 'lock-lost', 'the worker lost the job’s lock (another worker may have it now)')
    }
  })
  worker.run().catch((e: unknown) => emit({ kind: 'worker-warning', text: `queue: ${messageOf(e)}` }))
  try {
    await worker.waitUntilReady()
  } catch (e) {
    await worker.close(true).catch(() => undefined)
    sub.disconnect()
    client.disconnect()
    await workDir.remove().catch(() => undefined)
    if (--openWorkers === 0) setChildrenDieWithParent(false)
    throw e
  }
  emit({ kind: 'ready', worker: id, queue, workDir: workDir.dir })

  let resolveClosed!: () => void
  const closed = new Promise<void>((r) => (resolveClosed = r))
  let closing: Promise<void> | undefined
  const close = (o: { handBack?: boolean } = {}): Promise<void> => {
    if (o.handBack === true && !handingBack) {
      handingBack = true
      for (const r of running.values()) stop(r, 'hand-back', 'the worker is stopping: the job goes back to the queue')
    }
    closing ??= (async () => {
      const problems: string[] = []
      // Stops fetching and waits for the running jobs (aborted above when handing back).
      const closingWorker = worker.close().then(
        () => true,
        (e: unknown) => (problems.push(messageOf(e)), true),
      )
      // Our jobs' own Redis calls are bounded; BullMQ's record of their end is not (Redis gone):
      // past a bound after the last job, the connections are cut, which ends those calls.
      const stuck = async () => {
        // A job fetched as the close began may start after the others ended.
        do {
          await whenIdle()
          await delay(REDIS_MS)
        } while (running.size > 0)
        return false
      }
      const settled = await Promise.race([closingWorker, stuck()])
      if (!settled) {
        problems.push(`Redis did not answer within ${REDIS_MS / 1000} s: the worker’s connections were closed`)
        sub.disconnect()
        client.disconnect()
        // BullMQ's close may still not end (it retries what the cut cancelled): not waited for long.
        await Promise.race([closingWorker, delay(1000)])
      }
      await sweeping.catch(() => undefined)
      // A quit waits for a reconnect: only a connected client is asked to.
      const quit = (c: Redis) =>
        c.status === 'ready' ? within(c.quit(), 'quit').catch(() => c.disconnect()) : c.disconnect()
      await Promise.all([quit(sub), quit(client)])
      await workDir.remove().catch((e: unknown) => problems.push(`cannot remove ${workDir.dir}: ${messageOf(e)}`))
      for (const p of problems) emit({ kind: 'worker-warning', text: p })
      if (--openWorkers === 0) setChildrenDieWithParent(false)
      resolveClosed()
    })()
    return closing
  }
  return { id, closed, close }
}

async function subscribe(sub: Redis, channel: string): Promise<void> {
  sub.on('error', () => undefined) // reconnects on its own; the main client reports Redis being gone
  await sub.subscribe(channel)
}

interface Deps {
  queue: string
  id: string
  lockDuration: number
  workDir: WorkDir
  allowed: AllowedFolders
  opts: WorkerOptions
  emit: (e: WorkerEvent) => void
  client: Redis
  stop: (r: Running, why: StopWhy, text: string) => void
}

/** One delivery of a job: checks, the build, the outputs moved in; throws as BullMQ expects. */
async function processJob(job: Job, token: string, r: Running, d: Deps): Promise<JobResult> {
  const data: unknown = job.data
  const label =
    typeof data === 'object' && data !== null && typeof (data as { label?: unknown }).label === 'string'
      ? (data as { label: string }).label
      : r.jobId
  const delivery = Math.max(1, job.attemptsStarted)
  const progress = progressSender(job, delivery)
  const end = (status: JobEndStatus, o: { reason?: string; result?: JobResult } = {}) =>
    d.emit({ kind: 'job-end', jobId: r.jobId, build: label, status, ...o })
  const send = (e: Exclude<JobEvent, JobHandedBackEvent>) => {
    d.emit(e)
    if (e.kind === 'job-taken' || e.kind === 'job-failure' || FORWARDED.has(e.kind)) progress.send(e)
  }

  d.emit({ kind: 'job-start', jobId: r.jobId, build: label, delivery })
  send({ kind: 'job-taken', build: label, worker: d.id, delivery })
  const staging: string[] = []
  try {
    const result = await runJob(job, token, r, d, label, send, staging)
    await progress.flush()
    end('ok', { result })
    return result
  } catch (e) {
    const why = r.why
    // A final answer (a bad payload, a failed build) stands; an aborted build goes back.
    if (why === 'hand-back' && !(e instanceof JobFailure)) {
      // Its submitter then says the next delivery follows a stopped worker, not a lost one.
      progress.send({ kind: 'job-handed-back', build: label, worker: d.id })
      // One bound for both: with Redis gone, a closing worker does not wait twice.
      const deadline = Date.now() + REDIS_MS
      await progress.flush(REDIS_MS)
      // Back to the queue at once, not once the lock expires: another worker takes it now.
      try {
        await within(job.moveToWait(token), 'hand-back', Math.max(500, deadline - Date.now()))
      } catch (err) {
        d.emit({ kind: 'worker-warning', text: `cannot hand job ${r.jobId} back: ${messageOf(err)}` })
      }
      end('handed-back')
      throw new WaitingError()
    }
    const f = e instanceof JobFailure ? e : why === 'cancel' ? refused(CANCELLED_REASON) : failure(e)
    send({ kind: 'job-failure', build: label, lines: f.lines })
    await progress.flush()
    end(f.message === CANCELLED_REASON ? 'cancelled' : 'failed', { reason: f.message })
    // Lock lost: not ours to fail any more (BullMQ's move fails without the lock; the job's new
    // worker carries on). Unrecoverable all the same: nothing may retry it here, using an attempt.
    throw new UnrecoverableError(f.message)
  } finally {
    for (const s of staging) {
      await rm(s, { recursive: true, force: true }).catch(() => undefined)
      await d.workDir.removeStaging(s).catch(() => undefined)
    }
  }
}

/**
 * Job progress updates in order (seq) without the build waiting for Redis: each is sent at once,
 * errors ignored; flush() waits, in bounded time, for those still on their way.
 */
function progressSender(job: Job, delivery: number) {
  let seq = 0
  const pending = new Set<Promise<void>>()
  return {
    send(event: JobEvent) {
      const value: JobProgress = { seq: ++seq, event, delivery }
      const p = job.updateProgress(value).catch(() => undefined)
      pending.add(p)
      void p.finally(() => pending.delete(p))
    },
    async flush(ms = FLUSH_MS) {
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<void>((r) => (timer = setTimeout(r, ms)))
      await Promise.race([Promise.all([...pending]), late])
      clearTimeout(timer)
    },
  }
}

async function runJob(
  job: Job,
  token: string,
  r: Running,
  d: Deps,
  label: string,
  send: (e: Exclude<JobEvent, JobHandedBackEvent>) => void,
  staging: string[],
): Promise<JobResult> {
  const t0 = Date.now()
  if (r.why === 'hand-back') throw new BuildAbortedError('the worker is stopping')
  const key = cancelKey(d.queue, r.jobId)
  const isCancelled = async () => (await within(d.client.exists(key), 'the cancel mark')) > 0
  if (await isCancelled()) throw refused(CANCELLED_REASON)
  // BullMQ stores a job added without attempts as 0.
  const attempts = (job.opts.attempts ?? 0) > 0 ? job.opts.attempts! : DEFAULT_ATTEMPTS
  if (job.stalledCounter >= attempts) {
    throw refused(`its worker was lost ${job.stalledCounter} ${job.stalledCounter === 1 ? 'time' : 'times'}`)
  }
  let builds: ManyBuild[]
  try {
    builds = parsePayload(job.data, `job ${r.jobId}`)
  } catch (e) {
    if (e instanceof BatchFileError) throw failure(e, e.message.replace(/\n/g, '; '))
    throw e
  }
  const layer = builds.at(-1)!
  const base = builds.length > 1 ? builds[0] : undefined
  for (const b of builds) {
    const why = await refusedPath(b.options, d.allowed, { output: b !== base })
    if (why !== undefined) throw refused(b === base ? `its base ‘${b.name}’: ${why}` : why)
  }
  const final = layer.options.name!
  // The id names the staging folder (removed whole): only the one derived from the output is safe.
  const expected = jobIdFor(final)
  if (r.jobId !== expected) throw refused(`its id ‘${r.jobId}’ is not the one of its output (${expected}): refused`)

  const finalDir = dirname(final)
  const dir = stagingDirFor(final, hostname(), process.pid, r.jobId)
  // In the ledger before it exists: a worker killed in between leaves nothing unknown.
  staging.push(dir)
  await d.workDir.addStaging(dir)
  await rm(dir, { recursive: true, force: true })
  for (const p of await removeEarlierStaging(finalDir, r.jobId, dir)) {
    send({ kind: 'info', build: label, elapsed: 0, text: `removed ${p}, left by an earlier delivery of the job` })
  }
  try {
    await mkdir(dir)
  } catch (e) {
    throw refused(`cannot write in the output folder ${finalDir}: ${(e as NodeJS.ErrnoException).code ?? messageOf(e)}`)
  }
  const env = { ...process.env, TMPDIR: d.workDir.dir }
  const common: Partial<BuildOptions> = { env, ...(d.opts.verbose ? { verbose: true } : {}) }
  const runs: ManyBuild[] = []
  const baseName = base ? `${base.name} (for ${label})` : undefined
  if (base) {
    // The base's outputs are not wanted: a tar nobody keeps (no step's key depends on formats). Its
    // --checksum stays: the disk steps count it, and a layer after them shares them only if it matches.
    const scratch = join(d.workDir.dir, `base.${r.jobId}.${randomBytes(3).toString('hex')}`)
    staging.push(scratch)
    await mkdir(scratch)
    const name = join(scratch, basename(base.options.name ?? 'base'))
    runs.push({ name: baseName!, options: { ...base.options, ...common, name, formats: ['tar'] } })
  }
  runs.push({
    name: label,
    ...(baseName ? { base: baseName } : {}),
    options: { ...layer.options, ...common, name: join(dir, basename(final)) },
  })

  // A cancel published while the subscriber reconnected is lost: the mark is polled too.
  let polling = false
  const poll = setInterval(() => {
    if (polling || r.why !== undefined) return
    polling = true
    isCancelled()
      .then((yes) => yes && d.stop(r, 'cancel', CANCELLED_REASON))
      .catch(() => undefined)
      .finally(() => (polling = false))
  }, d.lockDuration / 2)
  let outcome: Extract<BuildOutcome, { status: 'ok' }>
  let outputs: Awaited<ReturnType<typeof hashOutputs>>
  try {
    const outcomes = await buildMany(runs, {
      concurrency: 1,
      ...(d.opts.cache ? { cache: d.opts.cache } : {}),
      signal: r.controller.signal,
      onEvent: (e: BatchEvent) => send(e),
      ...(d.opts.run ? { run: d.opts.run } : {}),
      ...(d.opts.planBuild ? { planBuild: d.opts.planBuild } : {}),
      ...(d.opts.planLayer ? { planLayer: d.opts.planLayer } : {}),
    })
    const last = outcomes.at(-1)!
    if (last.status !== 'ok') throw failureOf(last, outcomes[0])
    outcome = last
    // Hashed while BullMQ still renews the lock; the moves are quick, under a lock just extended.
    outputs = await hashOutputs(outcome.result, dir)
  } finally {
    clearInterval(poll)
  }
  if (r.why === 'cancel' || (await isCancelled())) throw refused(CANCELLED_REASON)
  const extended = await within(job.extendLock(token, d.lockDuration), 'the job’s lock').catch(() => 0)
  if (extended !== 1) {
    r.why = 'lock-lost'
    throw new VirtDibError('the worker lost the job’s lock before its outputs were put in place')
  }
  await moveIntoPlace(dir, finalDir)
  const inPlace = (p: string) => join(finalDir, relative(dir, p))
  const done: JobOutput[] = []
  for (const o of outputs) {
    const path = o.staged ? inPlace(o.path) : o.path
    const size = o.staged ? (await stat(path)).size : o.size
    done.push({ format: o.format, path, size, sha256: o.sha256 })
  }
  const extra = outcome.result.extraDataDir
  return {
    build: label,
    worker: d.id,
    outputs: done,
    ...(extra !== undefined ? { extraDataDir: extra.startsWith(`${dir}/`) ? inPlace(extra) : extra } : {}),
    seconds: (Date.now() - t0) / 1000,
    reused: outcome.reused,
  }
}

/** A layer skipped because its base failed fails with the base's error. */
function failureOf(outcome: BuildOutcome, first: BuildOutcome | undefined): JobFailure {
  if (outcome.status === 'failed') return failure(outcome.error)
  if (first?.status === 'failed') {
    return failure(first.error, `its base failed: ${messageOf(first.error)}`)
  }
  return refused(outcome.status === 'skipped' ? outcome.reason : 'the build did not run')
}

async function hashOutputs(
  result: BuildResult,
  dir: string,
): Promise<{ format: string; path: string; size: number; sha256: string; staged: boolean }[]> {
  const out = []
  for (const o of result.outputs) {
    const staged = o.path.startsWith(`${dir}/`)
    // A docker image is not a file: it has no hash of ours.
    const sha256 = o.sha256 ?? (staged ? await sha256File(o.path) : '')
    out.push({ format: o.format, path: o.path, size: o.size, sha256, staged })
  }
  return out
}
