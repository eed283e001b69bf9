// startWorker against a private redis-server and a real BullMQ queue: the demo elements planned for
// real, a fake run through the engine (it writes the plan's outputs and honours the abort). A job
// done, bad payloads refused while the worker keeps serving, a cancel through the channel, a hand
// back on close, the lost-worker count, a layer job, the sweep of a dead worker's folder.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { basename, join } from 'node:path'
import { PassThrough } from 'node:stream'

import { Queue, QueueEvents, Worker, type Job } from 'bullmq'
import { buildSync } from 'esbuild'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { BuildHooks, BuildResult } from '../../../src/engine/context.js'
import type { BuildPlan } from '../../../src/engine/plan.js'
import { parseWorkerArgs, runWorkerVerb } from '../../../src/cli/worker-command.js'
import { BuildAbortedError } from '../../../src/errors.js'
import { pids, readStat } from '../../../src/host/proc.js'
import type { JobPayload } from '../../../src/queue/payload.js'
import {
  CANCELLED_REASON,
  JOB_NAME,
  cancelChannel,
  cancelKey,
  isJobProgress,
  jobIdFor,
  type JobProgress,
  type JobResult,
} from '../../../src/queue/protocol.js'
import { QueueConnectionError } from '../../../src/queue/redis.js'
import { startWorker, type WorkerEvent, type WorkerOptions } from '../../../src/queue/worker.js'
import { DIB_LIB, root } from '../../helpers/cli.js'
import { freePort, startRedis, type PrivateRedis } from '../../helpers/redis-server.js'
import { tempDir } from '../../helpers/temp.js'

const tmp = tempDir('vdib-worker.')
const out = join(tmp, 'out')
const workRoot = join(tmp, 'work')
const elements = join(root, 'examples', 'elements')
mkdirSync(out)

let redis: PrivateRedis
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis?.stop()
})

/** How the fake build of an output behaves (by its file name). */
/** hold: until released or aborted; stubborn: until released, whatever aborts it. */
const behaviour = new Map<string, 'hold' | 'stubborn' | 'fail'>()
/** Builds the fake run is in: their plan and hooks, by output name. */
const started = new Map<string, { plan: BuildPlan; hooks: BuildHooks; release: () => void }>()

async function fakeRun(plan: BuildPlan, hooks: BuildHooks): Promise<BuildResult> {
  const name = basename(plan.outputPath)
  const emit = (e: Parameters<NonNullable<BuildHooks['onEvent']>>[0]) => hooks.onEvent?.(e)
  emit({ kind: 'phase-start', hook: 'root.d', where: 'appliance', elapsed: 0 })
  emit({ kind: 'script-start', hook: 'root.d', script: '10-demo', elapsed: 0 })
  emit({ kind: 'script-output', hook: 'root.d', script: '10-demo', line: 'hello', elapsed: 0.1 })
  emit({ kind: 'script-end', hook: 'root.d', script: '10-demo', status: 0, seconds: 0.1, elapsed: 0.1 })
  await new Promise<void>((resolve, reject) => {
    const abort = () => reject(hooks.signal!.reason as Error)
    const b = behaviour.get(name)
    if (b !== 'stubborn') {
      if (hooks.signal?.aborted) return abort()
      hooks.signal?.addEventListener('abort', abort, { once: true })
    }
    started.set(name, { plan, hooks, release: resolve })
    if (b !== 'hold' && b !== 'stubborn') resolve()
  })
  if (behaviour.get(name) === 'fail') throw new BuildAbortedError('fake failure') // any VirtDibError
  const outputs: BuildResult['outputs'] = []
  for (const f of plan.formats) {
    const path = `${plan.outputPath}.${f.extension}`
    const text = `${name} as ${f.name}\n`
    await writeFile(path, text)
    outputs.push({ format: f.name, path, size: text.length })
  }
  mkdirSync(`${plan.outputPath}.d`, { recursive: true })
  writeFileSync(join(`${plan.outputPath}.d`, 'manifest'), 'm\n')
  emit({ kind: 'phase-end', hook: 'root.d', where: 'appliance', seconds: 0.1, status: 0, scripts: [], elapsed: 0.2 })
  return { outputs, extraDataDir: `${plan.outputPath}.d`, seconds: 0.2 }
}

function entry(name: string, o: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: join(out, name),
    elements: ['demo-os'],
    libPath: DIB_LIB,
    elementPaths: [elements],
    skipBase: true,
    python: 'python3',
    imageCache: join(out, 'image-cache'),
    formats: ['qcow2'],
    ...o,
  }
}

const payload = (name: string, o: Record<string, unknown> = {}): JobPayload => ({
  v: 1,
  label: name,
  build: entry(name, o),
})

let queues = 0

/** A queue of its own for one test, a worker on it, and what it said. */
async function setup(o: Partial<WorkerOptions> = {}) {
  const name = `t${++queues}`
  const queue = new Queue(name, { connection: { url: redis.url } })
  const events: WorkerEvent[] = []
  const start = (more: Partial<WorkerOptions> = {}) =>
    startWorker({
      redis: redis.url,
      queue: name,
      allowElements: [elements, DIB_LIB],
      allowOutput: [out],
      cache: { dir: join(tmp, 'cache') },
      workRoot,
      lockDuration: 5000,
      run: fakeRun,
      onEvent: (e) => events.push(e),
      ...o,
      ...more,
    })
  const worker = await start()
  const add = (data: unknown, name2: string, attempts = 2) =>
    queue.add(JOB_NAME, data, { jobId: jobIdFor(join(out, name2)), attempts })
  return {
    name,
    queue,
    worker,
    events,
    start,
    add,
    async done() {
      await worker.close({ handBack: true })
      await queue.close()
    },
  }
}

async function until(cond: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  for (const end = Date.now() + ms; !(await cond());) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 25))
  }
}

async function finished(queue: Queue, id: string): Promise<Job> {
  await until(async () => {
    const state = await queue.getJobState(id)
    return state === 'completed' || state === 'failed'
  })
  return (await queue.getJob(id))!
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')
const staged = () => readdirSync(out).filter((n) => n.startsWith('.virt-dib-part.'))

describe('startWorker', () => {
  it('builds a job: outputs moved into place with their sha256, progress in order, nothing staged left', async () => {
    const t = await setup()
    const qe = new QueueEvents(t.name, { connection: { url: redis.url } })
    await qe.waitUntilReady()
    const progress: JobProgress[] = []
    qe.on('progress', ({ data }) => {
      if (isJobProgress(data)) progress.push(data)
    })
    try {
      const job = await t.add(payload('a'), 'a')
      const done = await finished(t.queue, job.id!)
      expect(done.failedReason).toBeFalsy()
      const result = done.returnvalue as JobResult
      const qcow2 = join(out, 'a.qcow2')
      expect(result).toMatchObject({
        build: 'a',
        worker: t.worker.id,
        outputs: [{ format: 'qcow2', path: qcow2, size: readFileSync(qcow2).length, sha256: sha256(qcow2) }],
        extraDataDir: join(out, 'a.d'),
      })
      expect(readFileSync(join(out, 'a.d', 'manifest'), 'utf8')).toBe('m\n')
      expect(staged()).toEqual([])
      // The build's TMPDIR is the worker's own folder.
      const plan = started.get('a')!.plan
      expect(plan.env['TMPDIR']).toBe(join(workRoot, `${hostname()}.${process.pid}`))
      await until(() => progress.some((p) => p.event.kind === 'build-end'))
      expect(progress.map((p) => p.seq)).toEqual(progress.map((_, i) => i + 1))
      expect(progress[0]!.event).toEqual({ kind: 'job-taken', build: 'a', worker: t.worker.id, delivery: 1 })
      const kinds = progress.map((p) => p.event.kind)
      expect(kinds).toEqual(
        expect.arrayContaining(['build-start', 'phase-start', 'script-start', 'script-end', 'phase-end', 'build-end']),
      )
      expect(kinds).not.toContain('script-output')
      // The worker's own listener gets every event, and one start and one end per job.
      expect(t.events.some((e) => e.kind === 'script-output')).toBe(true)
      expect(t.events.find((e) => e.kind === 'job-start')).toMatchObject({ jobId: job.id, build: 'a', delivery: 1 })
      expect(t.events.find((e) => e.kind === 'job-end')).toMatchObject({ jobId: job.id, build: 'a', status: 'ok' })

      // Again: the old outputs (and the old .d) are replaced whole.
      writeFileSync(join(out, 'a.d', 'stale'), 'x')
      // An earlier delivery's staging folder, of a worker lost on another host.
      const lost = join(out, `.virt-dib-part.lost-host.77.${job.id!}`)
      mkdirSync(lost)
      writeFileSync(join(lost, 'a.qcow2'), 'partial')
      await done.remove()
      const again = await t.add(payload('a'), 'a')
      await finished(t.queue, again.id!)
      expect(existsSync(join(out, 'a.d', 'stale'))).toBe(false)
      expect(readdirSync(out).filter((n) => n.startsWith('.'))).toEqual([])
    } finally {
      await qe.close()
      await t.done()
    }
  })

  it('fails a malformed payload and one outside the allowed folders with their reasons, and serves the next job', async () => {
    const t = await setup()
    try {
      const bad = await t.add({ v: 1, label: 'bad', build: { ...entry('bad'), fromats: ['qcow2'] } }, 'bad')
      const outside = await t.add(payload('outside', { elementPaths: ['/etc'] }), 'outside')
      const escape = await t.add(payload('escape', { name: join(out, '..', 'escape') }), 'escape')
      const notMap = await t.add('nonsense', 'nonsense')
      // An id not derived from the output: it would name the staging folder (removed whole) elsewhere.
      const victim = join(tmp, 'victim')
      mkdirSync(victim, { recursive: true })
      writeFileSync(join(victim, 'keep'), 'x')
      const evil = await t.queue.add(JOB_NAME, payload('evil'), { jobId: 'x/../../victim' })
      const other = await t.add(payload('other'), 'not-other')
      const good = await t.add(payload('good'), 'good')
      const failed = await finished(t.queue, bad.id!)
      expect(failed.failedReason).toMatch(/^job build-[0-9a-f]+: .*fromats: unknown key/)
      expect((await finished(t.queue, outside.id!)).failedReason).toBe(
        `elementPaths: /etc is outside the allowed element folders (${elements}, ${DIB_LIB})`,
      )
      expect((await finished(t.queue, escape.id!)).failedReason).toBe(
        `name: ${join(tmp, 'escape')} is outside the allowed output folders (${out})`,
      )
      expect((await finished(t.queue, notMap.id!)).failedReason).toMatch(/the payload is not a map/)
      expect((await finished(t.queue, evil.id!)).failedReason).toBe(
        `its id ‘x/../../victim’ is not the one of its output (${jobIdFor(join(out, 'evil'))}): refused`,
      )
      expect(readFileSync(join(victim, 'keep'), 'utf8')).toBe('x')
      expect((await finished(t.queue, other.id!)).failedReason).toMatch(/^its id ‘build-[0-9a-f]+’ is not the one/)
      expect(started.has('evil') || started.has('other')).toBe(false)
      expect(existsSync(join(out, 'evil.qcow2'))).toBe(false)
      expect((await finished(t.queue, good.id!)).returnvalue).toMatchObject({ build: 'good' })
      // Final answers: not retried.
      expect(await failed.getState()).toBe('failed')
      expect(failed.attemptsMade).toBe(1)
      const ends = t.events.filter((e) => e.kind === 'job-end').map((e) => e.status)
      expect(ends).toEqual(['failed', 'failed', 'failed', 'failed', 'failed', 'failed', 'ok'])
      expect(t.events.find((e) => e.kind === 'job-failure' && e.build === 'outside')).toMatchObject({
        lines: [expect.stringMatching(/^error: elementPaths: \/etc is outside/)],
      })
    } finally {
      await t.done()
    }
  })

  it('cancels a running job through the channel: failed as cancelled, not retried, nothing staged left', async () => {
    const t = await setup()
    try {
      behaviour.set('c', 'hold')
      started.delete('c')
      const job = await t.add(payload('c'), 'c')
      await until(() => started.has('c'))
      expect(staged()).toHaveLength(1)
      await redis.client.set(cancelKey(t.name, job.id!), '1', 'EX', 60)
      await redis.client.publish(cancelChannel(t.name), job.id!)
      const done = await finished(t.queue, job.id!)
      expect(done.failedReason).toBe(CANCELLED_REASON)
      expect(done.attemptsMade).toBe(1)
      expect(staged()).toEqual([])
      expect(existsSync(join(out, 'c.qcow2'))).toBe(false)
      expect(t.events.find((e) => e.kind === 'job-end' && e.build === 'c')).toMatchObject({ status: 'cancelled' })
      // Marked before it was taken: failed at once, never built.
      started.delete('c2')
      await redis.client.set(cancelKey(t.name, jobIdFor(join(out, 'c2'))), '1', 'EX', 60)
      const marked = await t.add(payload('c2'), 'c2')
      expect((await finished(t.queue, marked.id!)).failedReason).toBe(CANCELLED_REASON)
      expect(started.has('c2')).toBe(false)
      // The worker is free again.
      const next = await t.add(payload('c3'), 'c3')
      expect((await finished(t.queue, next.id!)).returnvalue).toMatchObject({ build: 'c3' })
    } finally {
      behaviour.delete('c')
      await t.done()
    }
  })

  it('cancels a job whose cancel message was missed: the mark is polled while it builds, and checked before its outputs move in', async () => {
    const t = await setup({ lockDuration: 1000 })
    try {
      behaviour.set('missed', 'hold')
      started.delete('missed')
      const job = await t.add(payload('missed'), 'missed')
      await until(() => started.has('missed'))
      // Marked, never published (the subscriber was reconnecting).
      await redis.client.set(cancelKey(t.name, job.id!), '1', 'EX', 60)
      const done = await finished(t.queue, job.id!)
      expect(done.failedReason).toBe(CANCELLED_REASON)
      expect(staged()).toEqual([])
      expect(existsSync(join(out, 'missed.qcow2'))).toBe(false)
    } finally {
      behaviour.delete('missed')
      await t.done()
    }
    const t2 = await setup({ lockDuration: 60_000 })
    try {
      behaviour.set('late', 'hold')
      started.delete('late')
      const job = await t2.add(payload('late'), 'late')
      await until(() => started.has('late'))
      // Marked as the build ends, long before the next poll: caught before the outputs move in.
      await redis.client.set(cancelKey(t2.name, job.id!), '1', 'EX', 60)
      started.get('late')!.release()
      const done = await finished(t2.queue, job.id!)
      expect(done.failedReason).toBe(CANCELLED_REASON)
      expect(staged()).toEqual([])
      expect(existsSync(join(out, 'late.qcow2'))).toBe(false)
    } finally {
      behaviour.delete('late')
      await t2.done()
    }
  })

  it('a job whose lock is gone when its build ends: nothing put in place, failed without a retry here', async () => {
    const t = await setup()
    try {
      behaviour.set('nolock', 'hold')
      started.delete('nolock')
      const job = await t.add(payload('nolock'), 'nolock')
      await until(() => started.has('nolock'))
      await redis.client.del(`bull:${t.name}:${job.id!}:lock`)
      started.get('nolock')!.release()
      await until(() => t.events.some((e) => e.kind === 'job-end'))
      expect(t.events.find((e) => e.kind === 'job-end')).toMatchObject({
        status: 'failed',
        reason: 'the worker lost the job’s lock before its outputs were put in place',
      })
      expect(existsSync(join(out, 'nolock.qcow2'))).toBe(false)
      expect(staged()).toEqual([])
      // Not moved to failed by us (no lock), nor retried by BullMQ in this worker.
      await new Promise((r) => setTimeout(r, 300))
      expect(t.events.filter((e) => e.kind === 'job-start')).toHaveLength(1)
      expect((await t.queue.getJob(job.id!))!.attemptsMade).toBe(0)
    } finally {
      behaviour.delete('nolock')
      await t.done()
    }
  })

  it('close({handBack}) settles in bounded time when Redis is gone, its staging folder removed', async () => {
    const own = await startRedis()
    const name = `t${++queues}`
    const queue = new Queue(name, { connection: { url: own.url } })
    const events: WorkerEvent[] = []
    const root3 = join(tmp, 'gone')
    const w = await startWorker({
      redis: own.url,
      queue: name,
      allowElements: [elements, DIB_LIB],
      allowOutput: [out],
      workRoot: root3,
      lockDuration: 5000,
      run: fakeRun,
      onEvent: (e) => events.push(e),
    })
    try {
      behaviour.set('gone', 'hold')
      started.delete('gone')
      await queue.add(JOB_NAME, payload('gone'), { jobId: jobIdFor(join(out, 'gone')) })
      await until(() => started.has('gone'))
      expect(staged()).toHaveLength(1)
      await queue.close()
      await own.stop()
      const t0 = Date.now()
      await w.close({ handBack: true })
      expect(Date.now() - t0).toBeLessThan(15_000)
      expect(staged()).toEqual([])
      expect(existsSync(join(root3, `${hostname()}.${process.pid}`))).toBe(false)
      expect(events.find((e) => e.kind === 'job-end')).toMatchObject({ status: 'handed-back' })
    } finally {
      behaviour.delete('gone')
      await w.close()
      await queue.close().catch(() => undefined)
      await own.stop().catch(() => undefined)
    }
  }, 40_000)

  it('close({handBack}) aborts the running build and puts its job back in the queue at once', async () => {
    const t = await setup()
    const qe = new QueueEvents(t.name, { connection: { url: redis.url } })
    await qe.waitUntilReady()
    const progress: JobProgress[] = []
    qe.on('progress', ({ data }) => {
      if (isJobProgress(data)) progress.push(data)
    })
    try {
      behaviour.set('h', 'hold')
      started.delete('h')
      const job = await t.add(payload('h'), 'h')
      await until(() => started.has('h'))
      const t0 = Date.now()
      await t.worker.close({ handBack: true })
      expect(Date.now() - t0).toBeLessThan(3000)
      expect(await job.getState()).toBe('waiting')
      // The submitter is told before the job goes back; every event says its delivery.
      await until(() => progress.some((p) => p.event.kind === 'job-handed-back'))
      expect(progress.at(-1)).toMatchObject({
        delivery: 1,
        event: { kind: 'job-handed-back', build: 'h', worker: t.worker.id },
      })
      expect(progress.every((p) => p.delivery === 1)).toBe(true)
      expect(staged()).toEqual([])
      expect(existsSync(join(workRoot, `${hostname()}.${process.pid}`))).toBe(false)
      expect(t.events.find((e) => e.kind === 'job-end')).toMatchObject({ status: 'handed-back' })
      // Another worker takes it (its second delivery) and builds it.
      behaviour.delete('h')
      const events: WorkerEvent[] = []
      const other = await t.start({ onEvent: (e) => events.push(e) })
      try {
        const done = await finished(t.queue, job.id!)
        expect(done.returnvalue).toMatchObject({ build: 'h' })
        expect(events.find((e) => e.kind === 'job-taken')).toMatchObject({ delivery: 2 })
        await until(() => progress.some((p) => p.event.kind === 'build-end' && p.delivery === 2))
        expect(progress.filter((p) => p.event.kind === 'job-taken').map((p) => p.delivery)).toEqual([1, 2])
      } finally {
        await other.close()
      }
    } finally {
      behaviour.delete('h')
      await qe.close()
      await t.done()
    }
  })

  it('fails a job whose worker was lost as many times as its attempts', async () => {
    const t = await setup()
    await t.worker.close()
    try {
      const job = await t.add(payload('lost'), 'lost', 2)
      await redis.client.hset(`bull:${t.name}:${job.id!}`, 'stc', '2')
      const w = await t.start()
      try {
        expect((await finished(t.queue, job.id!)).failedReason).toBe('its worker was lost 2 times')
      } finally {
        await w.close()
      }
    } finally {
      await t.queue.close()
    }
  })

  it('takes the job of a worker that died once its lock expires (its second delivery)', async () => {
    const t = await setup({ lockDuration: 1000 })
    await t.worker.close()
    /** A worker that takes the job and dies: its lock is never renewed. */
    const dieWith = async () => {
      const dead = new Worker(t.name, null, { connection: { url: redis.url }, autorun: false, lockDuration: 1000 })
      const taken = await dead.getNextJob('dead-token')
      expect(taken?.id).toBe(job.id)
      await dead.close(true)
    }
    const job = await t.add(payload('stalled'), 'stalled', 2)
    await dieWith()
    const events: WorkerEvent[] = []
    const w = await t.start({ lockDuration: 1000, onEvent: (e) => events.push(e) })
    try {
      const done = await finished(t.queue, job.id!)
      expect(done.returnvalue).toMatchObject({ build: 'stalled' })
      expect(done.stalledCounter).toBe(1)
      expect(events.find((e) => e.kind === 'job-taken')).toMatchObject({ delivery: 2 })
    } finally {
      await w.close()
    }
    await t.queue.close()
  })

  it('keeps the lock of a long build: not delivered again while it runs', async () => {
    const t = await setup({ lockDuration: 1000 })
    try {
      behaviour.set('long', 'hold')
      started.delete('long')
      const job = await t.add(payload('long'), 'long')
      await until(() => started.has('long'))
      await new Promise((r) => setTimeout(r, 2500))
      started.get('long')!.release()
      const done = await finished(t.queue, job.id!)
      expect(done.returnvalue).toMatchObject({ build: 'long' })
      expect(done.stalledCounter).toBe(0)
      expect(t.events.filter((e) => e.kind === 'job-start')).toHaveLength(1)
    } finally {
      behaviour.delete('long')
      await t.done()
    }
  })

  it('builds a layer job: its base into a scratch folder (tar, its own --checksum kept), the layer into place', async () => {
    const t = await setup()
    try {
      const data: JobPayload = {
        v: 1,
        label: 'top',
        build: entry('top', { elements: ['demo-os', 'demo-app'] }),
        base: { label: 'bottom', build: entry('bottom', { checksum: true }) },
      }
      started.delete('bottom')
      const job = await t.add(data, 'top')
      const done = await finished(t.queue, job.id!)
      expect(done.failedReason).toBeFalsy()
      expect(done.returnvalue).toMatchObject({ build: 'top', outputs: [{ path: join(out, 'top.qcow2') }] })
      const base = started.get('bottom')!.plan
      expect(base.formats.map((f) => f.name)).toEqual(['tar'])
      // The disk steps count --checksum: the layer shares them only if its base's matches.
      expect(base.checksum).toBe(true)
      expect(base.outputPath.startsWith(join(workRoot, `${hostname()}.${process.pid}`) + '/')).toBe(true)
      expect(existsSync(base.outputPath + '.tar')).toBe(false)
      expect(existsSync(join(out, 'bottom.qcow2'))).toBe(false)
      expect(t.events.some((e) => e.kind === 'build-end' && e.build === 'bottom (for top)')).toBe(true)
    } finally {
      await t.done()
    }
  })

  it('sweeps the work folders of dead workers of its host at start, and no other', async () => {
    const host = hostname()
    const root2 = join(tmp, 'sweep')
    const ppid = process.ppid
    // Our parent's pid with another start time: a later process reusing a dead worker's pid.
    const reused = join(root2, `${host}.${ppid}`)
    const leftStaging = join(out, `.virt-dib-part.${host}.${ppid}.build-x`)
    mkdirSync(join(reused, 'dib.abc'), { recursive: true })
    mkdirSync(leftStaging)
    writeFileSync(join(leftStaging, 'x.qcow2'), 'partial')
    writeFileSync(
      join(reused, 'ledger.json'),
      JSON.stringify({ v: 1, host, pid: ppid, startTime: 1, staging: [leftStaging] }),
    )
    // pid 1 with its real start time: alive.
    const live = join(root2, `${host}.1`)
    mkdirSync(live, { recursive: true })
    writeFileSync(
      join(live, 'ledger.json'),
      JSON.stringify({ v: 1, host, pid: 1, startTime: readStat(1)!.startTime, staging: [] }),
    )
    const otherHost = join(root2, `not-${host}.${ppid}`)
    mkdirSync(otherHost)
    const t = await setup({ workRoot: root2 })
    try {
      expect(existsSync(reused)).toBe(false)
      expect(existsSync(leftStaging)).toBe(false)
      expect(existsSync(live)).toBe(true)
      expect(existsSync(otherHost)).toBe(true)
      expect(t.events).toContainEqual({ kind: 'worker-info', text: `removed ${reused}, left by a dead worker` })
    } finally {
      await t.done()
    }
  })

  it('says in one line that Redis cannot be reached', async () => {
    const port = await freePort()
    const e: unknown = await startWorker({
      redis: `redis://127.0.0.1:${port}`,
      allowElements: [elements],
      allowOutput: [out],
      workRoot,
      connectTimeoutMs: 500,
    }).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(QueueConnectionError)
    expect((e as Error).message).toMatch(
      /^cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+ within 0\.5 s: .*ECONNREFUSED/,
    )
  })
})

describe('virt-dib worker', () => {
  it('needs --redis and both allowed folder lists, which must exist', () => {
    const ok = ['--redis', redis?.url ?? 'redis://localhost', '--allow-output', out]
    expect(() => parseWorkerArgs(['--allow-elements', elements, '--allow-output', out])).toThrow(
      'worker needs the queue’s Redis: --redis URL',
    )
    expect(() => parseWorkerArgs(ok)).toThrow('worker needs --allow-elements: the folders jobs may use')
    expect(() => parseWorkerArgs([...ok, '--allow-elements', join(tmp, 'nope')])).toThrow(
      `--allow-elements ${join(tmp, 'nope')}: no such file or directory`,
    )
    expect(() => parseWorkerArgs([...ok, '--allow-elements', '--queue', 'x'])).toThrow(
      "option '--allow-elements' requires an argument",
    )
    const f = parseWorkerArgs([...ok, '--allow-elements', elements, DIB_LIB, '--allow-elements', tmp, '-j', '2'])
    expect(f).toMatchObject({ allowElements: [elements, DIB_LIB, tmp], allowOutput: [out], jobs: 2 })
    expect(parseWorkerArgs([...ok, '--allow-elements', elements, '--lock-duration', '10s']).lockDuration).toBe(10_000)
  })

  it('prints each build’s lines prefixed with its name and a line per job; a stop hands the running job back, exit 0', async () => {
    const name = `t${++queues}`
    const queue = new Queue(name, { connection: { url: redis.url } })
    let text = ''
    let session: AbortController | undefined
    let ready!: () => void
    const isReady = new Promise<void>((r) => (ready = r))
    const io = {
      out: Object.assign(new PassThrough(), { isTTY: false }),
      color: false,
      setSession: (c: AbortController | undefined) => (session = c ?? session),
      exit: () => undefined,
      onForced: () => undefined,
      hardExitMs: 1000,
      api: async () => ({
        startWorker: (o: WorkerOptions) =>
          startWorker({
            ...o,
            workRoot,
            run: fakeRun,
            onEvent: (e) => (o.onEvent?.(e), e.kind === 'ready' && ready()),
          }),
        stopBuildsNow: () => undefined,
      }),
    }
    io.out.on('data', (b: Buffer) => (text += b.toString()))
    const args = ['--redis', redis.url, '--queue', name, '--cache-dir', join(tmp, 'cache')]
    args.push('--allow-elements', elements, DIB_LIB, '--allow-output', out)
    const code = runWorkerVerb(args, io)
    try {
      await isReady
      const job = await queue.add(JOB_NAME, payload('cli'), { jobId: jobIdFor(join(out, 'cli')) })
      expect((await finished(queue, job.id!)).returnvalue).toMatchObject({ build: 'cli' })
      behaviour.set('cli2', 'hold')
      started.delete('cli2')
      const held = await queue.add(JOB_NAME, payload('cli2'), { jobId: jobIdFor(join(out, 'cli2')) })
      await until(() => started.has('cli2'))
      session!.abort(new BuildAbortedError('exiting on signal SIGTERM', { signal: 'SIGTERM' }))
      expect(await code).toBe(0)
      expect(await held.getState()).toBe('waiting')
      const lines = text.split('\n')
      expect(lines).toContain(`[cli] job ${job.id} taken (delivery 1)`)
      expect(lines).toContain(`[cli] job ${job.id} finished`)
      expect(lines.some((l) => /^\[cli\] finished in \d/.test(l))).toBe(true)
      expect(lines.some((l) => l.startsWith('[cli] ') && l.includes('root.d'))).toBe(true)
      expect(lines).toContain(`[cli2] job ${held.id} handed back`)
    } finally {
      behaviour.delete('cli2')
      session?.abort()
      await code.catch(() => undefined)
      await queue.obliterate({ force: true })
      await queue.close()
    }
  })
})

describe('virt-dib worker, a second signal', () => {
  it('stops the builds at once, and ends with the signal’s error once the worker has closed', async () => {
    const name = `t${++queues}`
    const queue = new Queue(name, { connection: { url: redis.url } })
    let text = ''
    let ready!: () => void
    const isReady = new Promise<void>((r) => (ready = r))
    let stoppedNow = 0
    let forced = 0
    const io = {
      out: Object.assign(new PassThrough(), { isTTY: false }),
      color: false,
      setSession: () => undefined,
      exit: () => undefined,
      onForced: () => void forced++,
      hardExitMs: 60_000,
      api: async () => ({
        startWorker: (o: WorkerOptions) =>
          startWorker({
            ...o,
            workRoot,
            run: fakeRun,
            onEvent: (e) => (o.onEvent?.(e), e.kind === 'ready' && ready()),
          }),
        stopBuildsNow: () => void stoppedNow++,
      }),
    }
    io.out.on('data', (b: Buffer) => (text += b.toString()))
    const before = new Set(process.listeners('SIGTERM'))
    const args = ['--redis', redis.url, '--queue', name, '--cache-dir', join(tmp, 'cache')]
    args.push('--allow-elements', elements, DIB_LIB, '--allow-output', out)
    const code = runWorkerVerb(args, io)
    code.catch(() => undefined)
    behaviour.set('stub', 'stubborn')
    started.delete('stub')
    try {
      await isReady
      // Its own listener, called as the signal would (a real SIGTERM would reach the test runner too).
      const onTerm = process.listeners('SIGTERM').find((l) => !before.has(l))!
      const job = await queue.add(JOB_NAME, payload('stub'), { jobId: jobIdFor(join(out, 'stub')) })
      await until(() => started.has('stub'))
      onTerm('SIGTERM')
      expect(text).toContain(
        'virt-dib: SIGTERM: handing the running jobs back to the queue and stopping; a second SIGTERM stops at once',
      )
      expect(stoppedNow).toBe(0)
      onTerm('SIGTERM')
      expect([stoppedNow, forced]).toEqual([1, 1])
      // The build ends (stopBuildsNow killed its appliance); its job goes back; the verb throws the signal's error.
      started.get('stub')!.release()
      const e: unknown = await code.catch((x: unknown) => x)
      expect(e).toBeInstanceOf(BuildAbortedError)
      expect((e as BuildAbortedError).exitCode).toBe(143)
      expect(await job.getState()).toBe('waiting')
      expect(process.listeners('SIGTERM')).not.toContain(onTerm)
    } finally {
      behaviour.delete('stub')
      started.get('stub')?.release()
      await code.catch(() => undefined)
      await queue.obliterate({ force: true })
      await queue.close()
    }
  })
})

describe('host tools of a worker', () => {
  it('die with it when it is SIGKILLed, and so does what a process group started', async () => {
    // A process that turns the switch on as the worker does, starts a tool and a process group, and waits.
    const child = join(tmp, 'die-child.mjs')
    const src = join(root, 'src', 'host', 'spawn.ts')
    buildSync({
      stdin: {
        contents: `import { runProcess, runTool, setChildrenDieWithParent } from ${JSON.stringify(src)}
          setChildrenDieWithParent(true)
          void runTool('sleep', ['4101.5']).catch(() => undefined)
          void runProcess('sh', ['-c', 'sleep 4102.5 & sleep 4103.5'], { processGroup: true }).catch(() => undefined)
          setTimeout(() => process.stdout.write('ready\\n'), 300)
          setInterval(() => undefined, 1000)`,
        resolveDir: root,
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      outfile: child,
      logLevel: 'error',
    })
    const sleeps = () =>
      pids().filter((pid) => {
        const st = readStat(pid)
        if (!st || st.state === 'Z') return false
        try {
          const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
          return basename(argv[0] ?? '') === 'sleep' && /^410[123]\.5$/.test(argv[1] ?? '')
        } catch {
          return false
        }
      })
    const p = spawn(process.execPath, [child], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      await new Promise<void>((resolve) =>
        p.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve()),
      )
      await until(() => sleeps().length === 3, 3000)
    } finally {
      p.kill('SIGKILL')
    }
    await until(() => sleeps().length === 0, 3000)
  })
})
