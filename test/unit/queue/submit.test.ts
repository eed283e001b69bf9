// submitBuilds against a real redis-server, with a plain BullMQ Worker in the test playing the
// worker side of the contract (src/queue/protocol.ts): progress events, a JobResult or an
// UnrecoverableError after a job-failure event, the cancel channel.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'

import { parseBatch, type BatchSpec } from '../../../src/batch/batch-file.js'
import type { BatchEvent } from '../../../src/batch/types.js'
import { formatSummary } from '../../../src/cli/batch-render.js'
import { runSubmitVerb, type SubmitIo } from '../../../src/cli/submit-command.js'
import { BuildAbortedError } from '../../../src/errors.js'
import { parsePayload, type JobPayload } from '../../../src/queue/payload.js'
import {
  CANCELLED_REASON,
  cancelChannel,
  cancelKey,
  jobIdFor,
  type JobEvent,
  type JobResult,
} from '../../../src/queue/protocol.js'
import { openRedis, QueueConnectionError } from '../../../src/queue/redis.js'
import {
  CANCELLED_WAITING_REASON,
  GONE_REASON,
  NOT_FOLLOWED,
  NOT_SUBMITTED,
  RemoteBuildError,
  SubmitAbortedError,
  submitBuilds,
  type SubmitJobEvent,
} from '../../../src/queue/submit.js'
import { freePort, startRedis, type PrivateRedis } from '../../helpers/redis-server.js'

let redis: PrivateRedis
beforeAll(async () => {
  redis = await startRedis()
})
const dir = mkdtempSync(join(tmpdir(), 'vdib-submit.'))
afterAll(async () => {
  await redis?.stop()
  rmSync(dir, { recursive: true, force: true })
})

let n = 0
/** A queue of its own for each case, and a batch whose outputs are under a folder of its own. */
function fresh(builds = BUILDS): { queue: string; spec: BatchSpec } {
  const queue = `q${n++}`
  return { queue, spec: parseBatch(`${DEFAULTS}${builds}`, `/srv/${queue}`, 'test.yaml') }
}
const DEFAULTS = `
defaults:
  libPath: /dib/lib
  elementPaths: [/els]
  elements: [os]
`
const BUILDS = `
builds:
  - name: base
  - name: layer
    base: base
    elements: [extra]
  - name: other
    formats: [raw]
`

interface Run {
  label: string
  job: Job
  send: (e: JobEvent) => Promise<void>
  /** Resolves when a submitter publishes this job's id on the cancel channel. */
  cancelled: Promise<void>
}

interface FakeWorker {
  /** Job ids received on the cancel channel. */
  cancels: string[]
  close: () => Promise<void>
}

/** A worker whose builds are `run` (concurrency 1: one job at a time). */
async function fakeWorker(queue: string, run: (r: Run) => Promise<JobResult>): Promise<FakeWorker> {
  const conn = await openRedis(redis.url)
  const sub: Redis = conn.duplicate()
  await sub.subscribe(cancelChannel(queue))
  const cancels: string[] = []
  const waiters = new Map<string, () => void>()
  sub.on('message', (_channel: string, id: string) => {
    cancels.push(id)
    waiters.get(id)?.()
  })
  const worker = new Worker(
    queue,
    async (job: Job) => {
      const label = (job.data as JobPayload).label
      let seq = 0
      const send = (event: JobEvent) => job.updateProgress({ seq: ++seq, event, delivery: 1 })
      const cancelled = new Promise<void>((resolve) => waiters.set(job.id!, resolve))
      await send({ kind: 'job-taken', build: label, worker: 'fake-1', delivery: 1 })
      if ((await conn.exists(cancelKey(queue, job.id!))) === 1) throw new UnrecoverableError(CANCELLED_REASON)
      try {
        return await run({ label, job, send, cancelled })
      } finally {
        waiters.delete(job.id!)
      }
    },
    { connection: conn, concurrency: 1 },
  )
  worker.on('error', () => undefined)
  await worker.waitUntilReady()
  return {
    cancels,
    async close() {
      await worker.close(true)
      sub.disconnect()
      conn.disconnect()
    },
  }
}

const SHA = 'ab'.repeat(32)

/** A build that succeeds, sending the events a worker forwards (its own start and end among them). */
async function okBuild({ label, job, send }: Run): Promise<JobResult> {
  const path = `${(job.data as JobPayload).build['name'] as string}.qcow2`
  await send({ kind: 'build-start', build: label, elapsed: 0 })
  await send({ kind: 'phase-start', build: label, elapsed: 0.1, hook: 'root.d', where: 'host' })
  await send({ kind: 'cache-hit', build: label, elapsed: 0.2, steps: ['root.d'], key: 'k', ageSeconds: 3 })
  await send({ kind: 'script-start', build: label, elapsed: 0.3, hook: 'install.d', script: '10-x' })
  await send({
    kind: 'script-end',
    build: label,
    elapsed: 0.4,
    hook: 'install.d',
    script: '10-x',
    status: 0,
    seconds: 1,
  })
  await send({ kind: 'build-end', build: label, elapsed: 0.5, status: 'ok', seconds: 0.5 })
  return {
    build: label,
    worker: 'fake-1',
    outputs: [{ format: 'qcow2', path, size: 10, sha256: SHA }],
    seconds: 1.5,
    reused: ['root.d'],
  }
}

/** A build whose script fails: the job-failure lines, then UnrecoverableError. */
async function failingBuild({ label, send }: Run): Promise<JobResult> {
  await send({ kind: 'script-start', build: label, elapsed: 0.3, hook: 'install.d', script: '10-x' })
  const lines = ['error: install.d/10-x failed with status 1', 'last lines of install.d/10-x:', '  E: no such package']
  await send({ kind: 'job-failure', build: label, lines })
  throw new UnrecoverableError('install.d/10-x failed with status 1')
}

/** A build that runs until its submitter cancels it. */
async function hangingBuild({ label, send, cancelled }: Run): Promise<JobResult> {
  await send({ kind: 'phase-start', build: label, elapsed: 0.1, hook: 'root.d', where: 'host' })
  await cancelled
  await sleep(200) // the build's cleanup
  throw new UnrecoverableError(CANCELLED_REASON)
}

async function withQueue<T>(name: string, f: (q: Queue) => Promise<T>): Promise<T> {
  const q = new Queue(name, { connection: redis.client.duplicate({ maxRetriesPerRequest: null }) })
  try {
    return await f(q)
  } finally {
    await q.close()
    await q.disconnect()
  }
}

describe('submitBuilds', () => {
  it('adds one job per build, its id from the output path, its payload the build (a layer’s with its base)', async () => {
    const { queue, spec } = fresh()
    const jobEvents: SubmitJobEvent[] = []
    const r = await submitBuilds(spec, { redis: redis.url, queue, attempts: 3, onJob: (e) => jobEvents.push(e) })
    expect(r.outcomes).toBeUndefined()
    expect(r.jobs).toEqual(spec.builds.map((b) => ({ name: b.name, jobId: jobIdFor(b.options.name!), added: true })))
    expect(jobEvents.map((e) => [e.kind, e.build])).toEqual([
      ['job-added', 'base'],
      ['job-added', 'layer'],
      ['job-added', 'other'],
    ])
    await withQueue(queue, async (q) => {
      expect(await q.getWaitingCount()).toBe(3)
      const layer = (await q.getJob(jobIdFor(`/srv/${queue}/layer`)))!
      expect(layer.opts.attempts).toBe(3)
      expect(layer.opts.removeOnComplete).toEqual({ age: 7 * 86400 })
      const builds = parsePayload(layer.data, `job ${layer.id}`)
      expect(builds.map((b) => [b.name, b.base])).toEqual([
        ['base', undefined],
        ['layer', 'base'],
      ])
      expect(builds[1]!.options.elements).toEqual(['os', 'extra'])
      expect(builds[1]!.options.name).toBe(`/srv/${queue}/layer`)
      const other = (await q.getJob(jobIdFor(`/srv/${queue}/other`)))!
      const [only] = parsePayload(other.data, 'other')
      expect(only!.options.formats).toEqual(['raw'])
      expect((other.data as JobPayload).base).toBeUndefined()
    })
  })

  it('the same file submitted again while its jobs wait adds nothing and follows them', async () => {
    const { queue, spec } = fresh()
    await submitBuilds(spec, { redis: redis.url, queue })
    const jobEvents: SubmitJobEvent[] = []
    const r = await submitBuilds(spec, { redis: redis.url, queue, onJob: (e) => jobEvents.push(e) })
    expect(r.jobs.map((j) => j.added)).toEqual([false, false, false])
    expect(jobEvents.map((e) => [e.kind, e.state])).toEqual([
      ['already-queued', 'waiting'],
      ['already-queued', 'waiting'],
      ['already-queued', 'waiting'],
    ])
    await withQueue(queue, async (q) => expect(await q.getJobCountByTypes('waiting', 'active', 'completed')).toBe(3))
  })

  it('with wait: build-start when a worker takes the job, its events tagged, build-end; outcomes in the batch’s order', async () => {
    const { queue, spec } = fresh()
    const worker = await fakeWorker(queue, async (r) => {
      if (r.label === 'layer') {
        // The base built for the layer, tagged as the worker tags it.
        const tag = 'base (for layer)'
        await r.send({ kind: 'build-start', build: tag, elapsed: 0 })
        await r.send({ kind: 'phase-start', build: tag, elapsed: 0.1, hook: 'root.d', where: 'host' })
        await r.send({ kind: 'build-end', build: tag, elapsed: 1, status: 'ok', seconds: 1 })
      }
      return okBuild(r)
    })
    try {
      const events: BatchEvent[] = []
      const r = await submitBuilds(spec, { redis: redis.url, queue, wait: true, onEvent: (e) => events.push(e) })
      expect(r.jobs.map((j) => j.added)).toEqual([true, true, true])
      expect(r.outcomes!.map((o) => [o.name, o.status])).toEqual([
        ['base', 'ok'],
        ['layer', 'ok'],
        ['other', 'ok'],
      ])
      const ok = r.outcomes![2]!
      if (ok.status !== 'ok') throw new Error('not ok')
      expect(ok.result).toEqual({
        outputs: [{ format: 'qcow2', path: `/srv/${queue}/other.qcow2`, size: 10, sha256: SHA }],
        seconds: 1.5,
      })
      expect(ok.seconds).toBe(1.5)
      expect(ok.reused).toEqual(['root.d'])
      // One job at a time: each build's events in order, its own start and end once.
      const of = (b: string) => events.filter((e) => e.build === b).map((e) => e.kind)
      const kinds = ['build-start', 'info', 'phase-start', 'cache-hit', 'script-start', 'script-end', 'build-end']
      expect(of('other')).toEqual(kinds)
      expect(of('layer')).toEqual(kinds)
      expect(events[1]).toMatchObject({ kind: 'info', build: 'base', text: 'taken by the worker fake-1' })
      expect(events.filter((e) => e.build === 'base (for layer)')).toMatchObject([
        { kind: 'phase-start', hook: 'root.d' },
        { kind: 'info', text: 'finished in 1.0 s' },
      ])
      const end = events.find((e) => e.kind === 'build-end' && e.build === 'other')
      expect(end).toMatchObject({ status: 'ok', seconds: 1.5 })
      expect(events.map((e) => e.kind === 'build-start' && e.build).filter(Boolean)).toEqual(['base', 'layer', 'other'])

      // Again, waiting: the ended jobs are replaced and followed (their removal is not the new jobs' end).
      const again: BatchEvent[] = []
      const second = await submitBuilds(spec, { redis: redis.url, queue, wait: true, onEvent: (e) => again.push(e) })
      expect(second.jobs.map((j) => j.added)).toEqual([true, true, true])
      expect(second.outcomes!.map((o) => o.status)).toEqual(['ok', 'ok', 'ok'])
      expect(again.filter((e) => e.kind === 'build-end')).toHaveLength(3)
      expect(again.filter((e) => e.kind === 'phase-start')).toHaveLength(4)
    } finally {
      await worker.close()
    }
    // Ended jobs are replaced by a new submit, whose cancel mark from before is gone.
    const id = jobIdFor(spec.builds[0]!.options.name!)
    await redis.client.set(cancelKey(queue, id), '1')
    const again = await submitBuilds(spec, { redis: redis.url, queue })
    expect(again.jobs.map((j) => j.added)).toEqual([true, true, true])
    expect(await redis.client.exists(cancelKey(queue, id))).toBe(0)
    await withQueue(queue, async (q) => expect(await q.getWaitingCount()).toBe(3))
  })

  it('a failed job: a RemoteBuildError with its reason, and the worker’s lines in the summary', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: good
  - name: bad
`)
    const worker = await fakeWorker(queue, (r) => (r.label === 'bad' ? failingBuild(r) : okBuild(r)))
    try {
      const events: BatchEvent[] = []
      const r = await submitBuilds(spec, { redis: redis.url, queue, wait: true, onEvent: (e) => events.push(e) })
      const bad = r.outcomes![1]!
      expect(bad.status).toBe('failed')
      if (bad.status !== 'failed') throw new Error('not failed')
      expect(bad.error).toBeInstanceOf(RemoteBuildError)
      expect((bad.error as RemoteBuildError).message).toBe('install.d/10-x failed with status 1')
      expect(events.find((e) => e.kind === 'build-end' && e.build === 'bad')).toMatchObject({
        status: 'failed',
        reason: 'install.d/10-x failed with status 1',
      })
      const summary = formatSummary(r.outcomes!, { color: false })
      expect(summary).toContain(
        '    error: install.d/10-x failed with status 1\n    last lines of install.d/10-x:\n      E: no such package\n',
      )
      expect(summary).toContain('2 builds: 1 ok, 1 failed, 0 skipped')
    } finally {
      await worker.close()
    }
  })

  it('progress in order: repeated and old updates dropped; a second delivery says its worker was lost', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: one
`)
    const worker = await fakeWorker(queue, async ({ label, job }) => {
      const raw = (seq: number, event: JobEvent) => job.updateProgress({ seq, event })
      const phase = (hook: string): JobEvent => ({ kind: 'phase-start', build: label, elapsed: 0, hook, where: 'host' })
      await raw(3, phase('install.d')) // early: held until 2 came
      await raw(2, phase('root.d'))
      await raw(2, phase('root.d')) // a repeat
      // The job taken again (as after a lost worker): a new sequence.
      await raw(1, { kind: 'job-taken', build: label, worker: 'fake-2', delivery: 2 })
      await raw(1, { kind: 'job-taken', build: label, worker: 'fake-1', delivery: 1 }) // the old delivery's
      await raw(2, phase('finalise.d'))
      return { build: label, worker: 'fake-2', outputs: [], seconds: 2, reused: [] }
    })
    try {
      const events: BatchEvent[] = []
      await submitBuilds(spec, { redis: redis.url, queue, wait: true, onEvent: (e) => events.push(e) })
      expect(
        events.map((e) => (e.kind === 'phase-start' ? e.hook : e.kind === 'warning' ? `warning: ${e.text}` : e.kind)),
      ).toEqual([
        'build-start',
        'info',
        'root.d',
        'install.d',
        'warning: its worker was lost: taken again by fake-2 (delivery 2)',
        'finalise.d',
        'build-end',
      ])
    } finally {
      await worker.close()
    }
  })

  it('malformed progress is dropped (a debug line), the events after it shown, the wait ends', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: one
`)
    const worker = await fakeWorker(queue, async ({ label, job }) => {
      const raw = (value: unknown) => job.updateProgress(value as object)
      const phase = (hook: string) => ({ kind: 'phase-start', build: label, elapsed: 0, hook, where: 'host' })
      await raw({
        seq: 2,
        delivery: 1,
        event: { kind: 'build-end', build: 'base (for one)', elapsed: 1, status: 'ok' },
      })
      await raw({ seq: 3, delivery: 1, event: { kind: 'cache-hit', build: label, elapsed: 1, steps: 'root.d' } })
      await raw({ seq: 4, delivery: 1, event: { kind: 'no-such-kind', build: label } })
      await raw({ seq: 5, delivery: 1, event: { ...phase('root.d'), where: 'moon' } })
      await raw({ seq: 6, delivery: 1, event: { ...phase('root.d'), build: 7 } })
      await raw({ seq: 7, delivery: 1, event: null })
      await raw({ seq: 'x', event: phase('bad-seq') })
      await raw({ seq: 8, delivery: 'one', event: phase('bad-delivery') })
      await job.updateProgress(42)
      await raw({ seq: 8, delivery: 1, event: phase('install.d') })
      await raw({
        seq: 9,
        delivery: 1,
        event: { kind: 'cache-hit', elapsed: 1, steps: ['finalise.d'], key: 'k', ageSeconds: 1 },
      })
      return { build: label, worker: 'fake-1', outputs: [null, { path: 3 }] as never, seconds: 2, reused: [] }
    })
    try {
      const events: BatchEvent[] = []
      const t0 = Date.now()
      const r = await submitBuilds(spec, { redis: redis.url, queue, wait: true, onEvent: (e) => events.push(e) })
      expect(Date.now() - t0).toBeLessThan(5000)
      expect(r.outcomes).toMatchObject([{ name: 'one', status: 'ok', seconds: 2, reused: ['finalise.d'] }])
      expect((r.outcomes![0] as { result: { outputs: unknown[] } }).result.outputs).toEqual([])
      expect(events.filter((e) => e.kind !== 'debug').map((e) => (e.kind === 'phase-start' ? e.hook : e.kind))).toEqual(
        ['build-start', 'info', 'install.d', 'cache-hit', 'build-end'],
      )
      const debug = events.filter((e) => e.kind === 'debug')
      expect(debug).toHaveLength(9)
      expect(debug[0]).toMatchObject({
        build: 'one',
        text: expect.stringMatching(/^dropped a malformed progress event: /),
      })
      expect(debug.at(-1)).toMatchObject({ text: "dropped a progress update that is not virt-dib's: 42" })
    } finally {
      await worker.close()
    }
  })

  it('a followed job gone from the queue without an event: the wait ends, the build failed', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: gone
  - name: stays
`)
    await submitBuilds(spec, { redis: redis.url, queue })
    const goneId = jobIdFor(spec.builds[0]!.options.name!)
    const events: BatchEvent[] = []
    const p = submitBuilds(spec, { redis: redis.url, queue, wait: true, pollMs: 100, onEvent: (e) => events.push(e) })
    await sleep(300)
    // As after a Redis restart without its data: the job's keys are gone, and no event says so.
    await redis.client.del(`bull:${queue}:${goneId}`)
    await redis.client.lrem(`bull:${queue}:wait`, 0, goneId)
    await sleep(400)
    expect(events.filter((e) => e.kind === 'build-end')).toMatchObject([
      { build: 'gone', status: 'failed', reason: GONE_REASON },
    ])
    // Then the whole queue.
    await withQueue(queue, async (q) => {
      await q.pause()
      await q.obliterate({ force: true })
    })
    const r = await p
    expect(r.outcomes!.map((o) => [o.name, o.status, o.status === 'failed' && (o.error as Error).message])).toEqual([
      ['gone', 'failed', GONE_REASON],
      ['stays', 'failed', GONE_REASON],
    ])
  })

  it('a followed job that ended without its event: its outcome read from the job', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: ok
  - name: bad
`)
    await submitBuilds(spec, { redis: redis.url, queue })
    const [okId, badId] = spec.builds.map((b) => jobIdFor(b.options.name!))
    const p = submitBuilds(spec, { redis: redis.url, queue, wait: true, pollMs: 100 })
    await sleep(300)
    // Ended as a worker ends them, but behind the events' back (as when their listener missed them).
    const key = (id: string) => `bull:${queue}:${id}`
    const result: JobResult = { build: 'ok', worker: 'w', outputs: [], seconds: 4, reused: ['root.d'] }
    const lines = ['error: install.d/10-x failed with status 1', '  E: no such package']
    const progress = { seq: 3, delivery: 1, event: { kind: 'job-failure', build: 'bad', lines } }
    const now = Date.now()
    await redis.client
      .multi()
      .lrem(`bull:${queue}:wait`, 0, okId!)
      .lrem(`bull:${queue}:wait`, 0, badId!)
      .zadd(`bull:${queue}:completed`, now, okId!)
      .zadd(`bull:${queue}:failed`, now, badId!)
      .hset(key(okId!), { returnvalue: JSON.stringify(result), processedOn: now - 4000, finishedOn: now })
      .hset(key(badId!), {
        failedReason: 'install.d/10-x failed with status 1',
        progress: JSON.stringify(progress),
        processedOn: now - 3000,
        finishedOn: now,
      })
      .exec()
    const r = await p
    expect(r.outcomes).toMatchObject([
      { name: 'ok', status: 'ok', seconds: 4, reused: ['root.d'] },
      { name: 'bad', status: 'failed', seconds: 3 },
    ])
    const bad = r.outcomes![1] as { error: RemoteBuildError }
    expect(bad.error.message).toBe('install.d/10-x failed with status 1')
    expect(bad.error.summaryLines).toEqual(lines)
  })

  it('a cut-off delivery’s late progress is dropped; a job handed back is taken again, not lost', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: one
`)
    const worker = await fakeWorker(queue, async ({ label, job }) => {
      const raw = (seq: number, delivery: number, event: JobEvent) => job.updateProgress({ seq, event, delivery })
      const phase = (hook: string): JobEvent => ({ kind: 'phase-start', build: label, elapsed: 0, hook, where: 'host' })
      await raw(2, 1, phase('root.d'))
      await raw(3, 1, { kind: 'job-handed-back', build: label, worker: 'fake-1' })
      await raw(1, 2, { kind: 'job-taken', build: label, worker: 'fake-2', delivery: 2 })
      await raw(2, 1, phase('late.d')) // the first delivery's, after the second began
      await raw(2, 2, phase('install.d'))
      await raw(3, 3, phase('ahead.d')) // a delivery never taken
      await raw(1, 3, { kind: 'job-taken', build: label, worker: 'fake-3', delivery: 3 })
      await raw(2, 3, phase('finalise.d'))
      return { build: label, worker: 'fake-3', outputs: [], seconds: 2, reused: [] }
    })
    try {
      const events: BatchEvent[] = []
      await submitBuilds(spec, { redis: redis.url, queue, wait: true, onEvent: (e) => events.push(e) })
      const text = (e: BatchEvent) =>
        e.kind === 'phase-start' ? e.hook : e.kind === 'warning' || e.kind === 'info' ? `${e.kind}: ${e.text}` : e.kind
      expect(events.map(text)).toEqual([
        'build-start',
        'info: taken by the worker fake-1',
        'root.d',
        'info: handed back to the queue by fake-1, which is stopping',
        'info: taken again by fake-2 after its worker stopped (delivery 2)',
        'install.d',
        'warning: its worker was lost: taken again by fake-3 (delivery 3)',
        'finalise.d',
        'build-end',
      ])
    } finally {
      await worker.close()
    }
  })

  it('follows a job already running when it is submitted again', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: one
`)
    let release: () => void = () => undefined
    const released = new Promise<void>((resolve) => (release = resolve))
    let taken: () => void = () => undefined
    const isTaken = new Promise<void>((resolve) => (taken = resolve))
    const worker = await fakeWorker(queue, async (r) => {
      taken()
      await released
      return okBuild(r)
    })
    try {
      await submitBuilds(spec, { redis: redis.url, queue })
      await isTaken
      const events: BatchEvent[] = []
      const jobEvents: SubmitJobEvent[] = []
      const p = submitBuilds(spec, {
        redis: redis.url,
        queue,
        wait: true,
        onEvent: (e) => {
          events.push(e)
          if (e.kind === 'build-start') release()
        },
        onJob: (e) => jobEvents.push(e),
      })
      const r = await p
      expect(jobEvents).toMatchObject([{ kind: 'already-queued', state: 'active' }])
      expect(r.outcomes!.map((o) => o.status)).toEqual(['ok'])
      expect(events.map((e) => e.kind)).toEqual([
        'build-start',
        'phase-start',
        'cache-hit',
        'script-start',
        'script-end',
        'build-end',
      ])
    } finally {
      await worker.close()
    }
  })

  it('an abort while waiting removes the queued job, cancels the running one on its worker, and rejects', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: running
  - name: queued
`)
    const worker = await fakeWorker(queue, hangingBuild)
    try {
      const controller = new AbortController()
      const events: BatchEvent[] = []
      const p = submitBuilds(spec, {
        redis: redis.url,
        queue,
        wait: true,
        signal: controller.signal,
        cancelWaitMs: 5000,
        onEvent: (e) => {
          events.push(e)
          if (e.kind === 'phase-start')
            controller.abort(new BuildAbortedError('exiting on signal SIGINT', { signal: 'SIGINT' }))
        },
      })
      const t0 = Date.now()
      const e: unknown = await p.catch((x: unknown) => x)
      expect(Date.now() - t0).toBeLessThan(5000)
      expect(e).toBeInstanceOf(SubmitAbortedError)
      expect(e).toBeInstanceOf(BuildAbortedError)
      const aborted = e as SubmitAbortedError
      expect(aborted.exitCode).toBe(130)
      expect(aborted.message).toBe('exiting on signal SIGINT')
      const [running, queued] = aborted.outcomes
      expect(running).toMatchObject({ name: 'running', status: 'failed' })
      expect((running as { error: Error }).error.message).toBe(CANCELLED_REASON)
      expect(queued).toEqual({ name: 'queued', status: 'skipped', reason: CANCELLED_WAITING_REASON })
      expect(worker.cancels).toContain(aborted.jobs[0]!.jobId)
      expect(await redis.client.exists(cancelKey(queue, aborted.jobs[0]!.jobId))).toBe(1)
      expect(await redis.client.exists(cancelKey(queue, aborted.jobs[1]!.jobId))).toBe(1)
      await withQueue(queue, async (q) => {
        expect(await q.getJob(aborted.jobs[1]!.jobId)).toBeUndefined()
        expect(await q.getJob(aborted.jobs[0]!.jobId).then((j) => j?.getState())).toBe('failed')
      })
      expect(events.filter((x) => x.kind === 'build-end')).toMatchObject([
        { build: 'queued', status: 'skipped' },
        { build: 'running', status: 'failed', reason: CANCELLED_REASON },
      ])
      expect(formatSummary(aborted.outcomes, { color: false })).toContain('2 builds: 0 ok, 1 failed, 1 skipped')
    } finally {
      await worker.close()
    }
  })

  it('an abort cancels only the jobs it added: one queued earlier is left, skipped as no longer followed', async () => {
    const { queue, spec } = fresh(`
builds:
  - name: theirs
  - name: mine
`)
    const earlier = parseBatch(`${DEFAULTS}\nbuilds:\n  - name: theirs\n`, `/srv/${queue}`, 'test.yaml')
    await submitBuilds(earlier, { redis: redis.url, queue })
    const controller = new AbortController()
    let jobs = 0
    const e: unknown = await submitBuilds(spec, {
      redis: redis.url,
      queue,
      wait: true,
      signal: controller.signal,
      onJob: () => {
        if (++jobs === 2) setImmediate(() => controller.abort())
      },
    }).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(SubmitAbortedError)
    const aborted = e as SubmitAbortedError
    expect(aborted.jobs.map((j) => [j.name, j.added])).toEqual([
      ['theirs', false],
      ['mine', true],
    ])
    expect(aborted.outcomes).toEqual([
      { name: 'theirs', status: 'skipped', reason: NOT_FOLLOWED },
      { name: 'mine', status: 'skipped', reason: CANCELLED_WAITING_REASON },
    ])
    const [theirs, mine] = aborted.jobs.map((j) => j.jobId)
    expect(await redis.client.exists(cancelKey(queue, theirs!))).toBe(0)
    expect(await redis.client.exists(cancelKey(queue, mine!))).toBe(1)
    await withQueue(queue, async (q) => {
      expect(await q.getJob(theirs!).then((j) => j?.getState())).toBe('waiting')
      expect(await q.getJob(mine!)).toBeUndefined()
    })
  })

  it('an abort while submitting: the job added is removed, the others are not submitted', async () => {
    const { queue, spec } = fresh()
    const controller = new AbortController()
    const t0 = Date.now()
    const e: unknown = await submitBuilds(spec, {
      redis: redis.url,
      queue,
      wait: true,
      signal: controller.signal,
      onJob: () => controller.abort(),
    }).catch((x: unknown) => x)
    expect(Date.now() - t0).toBeLessThan(2000)
    expect(e).toBeInstanceOf(SubmitAbortedError)
    const aborted = e as SubmitAbortedError
    expect(aborted.jobs.map((j) => j.name)).toEqual(['base'])
    expect(aborted.outcomes).toEqual([
      { name: 'base', status: 'skipped', reason: CANCELLED_WAITING_REASON },
      { name: 'layer', status: 'skipped', reason: NOT_SUBMITTED },
      { name: 'other', status: 'skipped', reason: NOT_SUBMITTED },
    ])
    await withQueue(queue, async (q) => expect(await q.getJobCountByTypes('waiting', 'active')).toBe(0))
  })

  it('an unreachable Redis: one line, within the connect timeout', async () => {
    const { queue, spec } = fresh()
    const port = await freePort()
    const t0 = Date.now()
    const e: unknown = await submitBuilds(spec, {
      redis: `redis://127.0.0.1:${port}`,
      queue,
      wait: true,
      connectTimeoutMs: 1000,
    }).catch((x: unknown) => x)
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(e).toBeInstanceOf(QueueConnectionError)
    expect((e as Error).message).toMatch(new RegExp(`^cannot reach Redis at redis://127.0.0.1:${port} within 1 s: `))
    expect((e as Error).message).not.toContain('\n')
  })

  it('refuses a queue name BullMQ cannot use and an already aborted signal, before connecting', async () => {
    const { spec } = fresh()
    await expect(submitBuilds(spec, { redis: redis.url, queue: 'a:b' })).rejects.toThrow(/must not .* contain ‘:’/)
    await expect(
      submitBuilds(spec, { redis: 'redis://127.0.0.1:1', signal: AbortSignal.abort() }),
    ).rejects.toBeInstanceOf(BuildAbortedError)
    await sleep(0)
  })
})

/** `virt-dib submit` in this process: its output, and a batch file of `builds` in a folder of its own. */
function cli(builds: string) {
  const queue = `q${n++}`
  const file = join(dir, `${queue}.yaml`)
  writeFileSync(file, `${DEFAULTS}${builds}`)
  let out = ''
  const stream = { write: (t: string) => ((out += t), true), on: () => stream, off: () => stream, isTTY: false }
  const io: SubmitIo = {
    out: stream as unknown as SubmitIo['out'],
    color: false,
    setSession: vi.fn(),
    exit: vi.fn(),
    onForced: vi.fn(),
    hardExitMs: 5000,
  }
  const run = (...args: string[]) => runSubmitVerb(['--redis', redis.url, '--queue', queue, file, ...args], io)
  return { queue, file, io, run, out: () => out }
}

describe('virt-dib submit', () => {
  it('without --wait: one line per job, exit 0; again: already queued', async () => {
    const c = cli(BUILDS)
    expect(await c.run()).toBe(0)
    const id = (name: string) => jobIdFor(join(dir, name))
    expect(c.out()).toBe(
      `submitted ‘base’ as ${id('base')}\nsubmitted ‘layer’ as ${id('layer')}\nsubmitted ‘other’ as ${id('other')}\n`,
    )
    expect(await c.run()).toBe(0)
    expect(c.out()).toContain(`‘layer’ is already queued as ${id('layer')}: not submitted again\n`)
  })

  it('--wait: the builds’ lines prefixed, the summary with a failure’s lines, exit 1', async () => {
    const c = cli(`
builds:
  - name: good
  - name: bad
`)
    const worker = await fakeWorker(c.queue, (r) => (r.label === 'bad' ? failingBuild(r) : okBuild(r)))
    try {
      expect(await c.run('--wait')).toBe(1)
    } finally {
      await worker.close()
    }
    const out = c.out()
    expect(out).toMatch(/^submitted ‘good’ as build-\w+\nsubmitted ‘bad’ as build-\w+\n/)
    expect(out).toContain('[good] [   0.3] Running: install.d/10-x\n')
    expect(out).toMatch(/\[good\] finished in 1\.5 s\n/)
    expect(out).toMatch(/\[bad\] failed after [\d.]+ s: install\.d\/10-x failed with status 1\n/)
    expect(out).toMatch(/\nBUILD +RESULT +SECONDS +OUTPUTS +REUSED\n/)
    expect(out).toContain(`${join(dir, 'good.qcow2')}`)
    expect(out).toContain('    last lines of install.d/10-x:\n      E: no such package\n')
    expect(out).toMatch(/2 builds: 1 ok, 1 failed, 0 skipped\n$/)
  })

  it('SIGINT while waiting: says it cancels, cancels, prints the summary, rejects with the signal’s abort', async () => {
    const c = cli(`
builds:
  - name: slow
`)
    const worker = await fakeWorker(c.queue, async (r) => {
      setImmediate(() => process.emit('SIGINT', 'SIGINT'))
      return hangingBuild(r)
    })
    let e: unknown
    try {
      e = await c.run('--wait').catch((x: unknown) => x)
    } finally {
      await worker.close()
    }
    expect(e).toBeInstanceOf(BuildAbortedError)
    expect((e as BuildAbortedError).exitCode).toBe(130)
    expect(c.out()).toContain('virt-dib: SIGINT: cancelling the jobs this submit added (queued ones removed')
    expect(c.out()).toMatch(
      /slow +failed .*\n +error: cancelled by its submitter\n1 build: 0 ok, 1 failed, 0 skipped\n$/,
    )
    expect(worker.cancels).toHaveLength(1)
    expect(process.listenerCount('SIGINT')).toBe(0)
  })
})
