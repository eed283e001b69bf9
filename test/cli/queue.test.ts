// The build queue end to end with real processes and a real redis-server, fake builds injected
// through the engine (test/fixtures/queue/fake-worker.mjs): two workers and three jobs from
// `submit --wait`; a worker SIGKILLed in the middle of a build; Ctrl-C on `submit --wait`; payloads
// that are malformed or outside the allowed folders; Redis unreachable. The real build is
// test/appliance/queue.test.ts.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { Queue } from 'bullmq'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { jobIdFor } from '../../src/queue/protocol.js'
import { DIB_LIB, root, startCli } from '../helpers/cli.js'
import { allProcesses, alive, waitFor } from '../helpers/processes.js'
import { freePort, startRedis, type PrivateRedis } from '../helpers/redis-server.js'
import { tempDir } from '../helpers/temp.js'

interface FakeWorker {
  name: string
  child: ChildProcess
  tag: string
  out: () => string
  err: () => string
  exited: Promise<number | null>
}

const elements = join(root, 'examples', 'elements')

describe('virt-dib worker and submit (fake builds, real Redis, real processes)', () => {
  const tmp = tempDir('vdib-queue-cli.')
  const out = join(tmp, 'out')
  let redis: PrivateRedis
  const workers: FakeWorker[] = []
  let seq = 0

  function startWorker(name: string, extra: string[] = []): FakeWorker {
    const tag = `0.000${process.pid}${++seq}`
    // One TMPDIR for all, as on a real host: a worker sweeps the dead workers' folders there.
    const work = join(tmp, 'work')
    mkdirSync(work, { recursive: true })
    // prettier-ignore
    const child = spawn(process.execPath, [
      join(root, 'test', 'fixtures', 'queue', 'fake-worker.mjs'),
      '--redis', redis.url, '-j', '1', '--lock-duration', '2s', '--cache-dir', join(tmp, `steps-${name}`),
      '--allow-elements', elements, DIB_LIB, '--allow-output', out, ...extra,
    ], { env: { ...process.env, TMPDIR: work, FAKE_SLEEP_TAG: tag }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()))
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()))
    const exited = new Promise<number | null>((r) => child.on('close', (c) => r(c)))
    const w = { name, child, tag, out: () => stdout, err: () => stderr, exited }
    workers.push(w)
    return w
  }

  /** The fake build's `sleep` children of a worker (found by its tag, wherever they were reparented). */
  const sleepsOf = (w: FakeWorker) =>
    allProcesses().filter((p) => p.cmdline.includes('sleep') && p.cmdline.includes(w.tag))

  function batchFile(file: string, names: string[]): string {
    const path = join(tmp, file)
    writeFileSync(
      path,
      `defaults:
  libPath: ${DIB_LIB}
  elementPaths: [${elements}]
  skipBase: true
  elements: [demo-os]
  formats: [tar, qcow2]
builds:
${names.map((n) => `  - { name: out/${n} }`).join('\n')}
`,
    )
    return path
  }

  const submit = (args: string[]) => startCli(['submit', '--redis', redis.url, ...args], process.env)
  const staging = () => readdirSync(out).filter((f) => f.startsWith('.virt-dib-part.'))

  beforeAll(async () => {
    mkdirSync(out, { recursive: true })
    redis = await startRedis()
  })

  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL')
    await Promise.all(workers.map((w) => w.exited))
    await redis?.stop()
  })

  it('two workers build three jobs from submit --wait; the summary lists each output', async () => {
    const a = startWorker('a')
    const b = startWorker('b')
    const run = submit([batchFile('three.yaml', ['one', 'two', 'three']), '--wait'])
    const status = await run.exited
    expect(status, run.out() + run.err()).toBe(0)
    for (const n of ['one', 'two', 'three']) {
      expect(run.out()).toMatch(new RegExp(`out/${n}\\s+ok`))
      expect(readFileSync(join(out, `${n}.tar`), 'utf8')).toBe(`fake tar of ${n}\n`)
      expect(readFileSync(join(out, `${n}.qcow2`), 'utf8')).toBe(`fake qcow2 of ${n}\n`)
    }
    expect(run.out()).toContain('3 builds: 3 ok, 0 failed, 0 skipped')
    expect(run.out()).toMatch(/^\[out\/one\] .*install\.d/m)
    // Both workers served.
    const served = [a, b].map((w) => (w.out().match(/ taken/g) ?? []).length)
    expect(
      served.reduce((x, y) => x + y),
      a.out() + b.out(),
    ).toBe(3)
    expect(Math.min(...served)).toBeGreaterThanOrEqual(1)
    expect(staging()).toEqual([])
  }, 60_000)

  it('a worker SIGKILLed mid-build: its children die with it, the other worker completes the job, no partial output', async () => {
    const file = batchFile('kill.yaml', ['slow-kill'])
    const first = submit([file])
    expect(await first.exited, first.out() + first.err()).toBe(0)
    expect(first.out()).toContain('submitted')
    let victim: FakeWorker | undefined
    await waitFor(() => (victim = workers.find((w) => /slow-kill.* taken/.test(w.out()))) !== undefined, 15_000)
    expect(victim, 'no worker took the job').toBeDefined()
    await waitFor(() => sleepsOf(victim!).length > 0, 5000)
    const children = sleepsOf(victim!).map((p) => p.pid)
    expect(children.length).toBeGreaterThan(0)
    victim!.child.kill('SIGKILL')
    await victim!.exited
    // Nothing of the dead worker keeps running on this host.
    expect(await waitFor(() => children.every((pid) => !alive(pid)), 5000)).toBe(true)
    // The same file submitted again follows the job already there rather than adding one.
    const follow = submit([file, '--wait'])
    expect(await follow.exited, follow.out() + follow.err()).toBe(0)
    expect(follow.out()).toMatch(/out\/slow-kill\s+ok/)
    expect(readFileSync(join(out, 'slow-kill.tar'), 'utf8')).toBe('fake tar of slow-kill\n')
    const other = workers.find((w) => w !== victim && alive(w.child.pid!))!
    expect(other.out()).toMatch(/slow-kill.* taken.*delivery 2/)
    // The survivor swept the dead worker's staging folder.
    expect(await waitFor(() => staging().length === 0, 5000), staging().join(' ')).toBe(true)
  }, 90_000)

  it('Ctrl-C on submit --wait cancels the running job; its worker is free again, nothing left', async () => {
    const run = submit([batchFile('cancel.yaml', ['slow-cancel']), '--wait'])
    await waitFor(() => /\[out\/slow-cancel\] /.test(run.out()), 15_000)
    const worker = workers.find((w) => /slow-cancel.* taken/.test(w.out()))!
    expect(worker).toBeDefined()
    await waitFor(() => sleepsOf(worker).length > 0, 5000)
    run.child.kill('SIGINT')
    expect(await run.exited, run.out() + run.err()).toBe(130)
    expect(run.out()).toMatch(/out\/slow-cancel\s+failed/)
    expect(await waitFor(() => /slow-cancel.*cancelled/.test(worker.out()), 10_000), worker.out()).toBe(true)
    expect(await waitFor(() => sleepsOf(worker).length === 0, 5000)).toBe(true)
    expect(existsSync(join(out, 'slow-cancel.tar'))).toBe(false)
    expect(staging()).toEqual([])
    // Not retried: it stays failed.
    const queue = new Queue('virt-dib', { connection: redis.client })
    const job = await queue.getJob(jobIdFor(join(out, 'slow-cancel')))
    expect(await job?.getState()).toBe('failed')
    await queue.close()
    // The worker takes the next job.
    const next = submit([batchFile('after-cancel.yaml', ['after-cancel']), '--wait'])
    expect(await next.exited, next.out() + next.err()).toBe(0)
  }, 60_000)

  it('fails a malformed payload and one outside the allowed folders with their reasons, and keeps serving', async () => {
    const queue = new Queue('virt-dib', { connection: redis.client })
    await queue.add('build', { v: 1, label: 'bad', build: { name: 5 } }, { jobId: 'bad-payload' })
    await queue.add('build', 'not even a map', { jobId: 'bad-shape' })
    const outside = {
      v: 1,
      label: 'outside',
      build: { name: join(out, 'outside'), libPath: DIB_LIB, elementPaths: ['/etc'], elements: ['demo-os'] },
    }
    await queue.add('build', outside, { jobId: 'outside' })
    const escape = {
      v: 1,
      label: 'escape',
      build: { name: join(out, '..', 'escape'), libPath: DIB_LIB, elementPaths: [elements], elements: ['demo-os'] },
    }
    await queue.add('build', escape, { jobId: 'escape' })
    const reason = async (id: string) => {
      let r = ''
      await waitFor(() => {
        void queue.getJob(id).then((j) => (r = j?.failedReason ?? ''))
        return r !== ''
      }, 15_000)
      return r
    }
    expect(await reason('bad-payload')).toMatch(/builds\[0\]\.name: expected a file name/)
    expect(await reason('bad-shape')).toMatch(/not a map/)
    expect(await reason('outside')).toMatch(/elementPaths: \/etc is outside the allowed element folders/)
    expect(await reason('escape')).toMatch(/is outside the allowed output folders/)
    await queue.close()
    const next = submit([batchFile('after-bad.yaml', ['after-bad']), '--wait'])
    expect(await next.exited, next.out() + next.err()).toBe(0)
    expect(workers.filter((w) => alive(w.child.pid!)).length).toBeGreaterThanOrEqual(1)
  }, 60_000)

  it('says in one line, fast, that Redis cannot be reached', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`
    const t0 = Date.now()
    const w = startCli(['worker', '--redis', url, '--allow-elements', elements, '--allow-output', out], process.env)
    const s = startCli(['submit', '--redis', url, batchFile('unreachable.yaml', ['x'])], process.env)
    expect(await w.exited).toBe(1)
    expect(await s.exited).toBe(1)
    expect(Date.now() - t0).toBeLessThan(10_000)
    for (const r of [w, s]) {
      expect(r.err().trim().split('\n')[0]).toMatch(new RegExp(`^virt-dib: error: cannot reach Redis at ${url}`))
      expect(r.out()).toBe('')
    }
  }, 30_000)

  it('a worker ends with 0 on SIGTERM and leaves its work folder empty', async () => {
    const live = workers.filter((w) => alive(w.child.pid!))
    for (const w of live) w.child.kill('SIGTERM')
    for (const w of live) expect(await w.exited, w.out() + w.err()).toBe(0)
    // The live ones removed their own folders on the way out; the killed one's was swept.
    const dir = join(tmp, 'work', 'virt-dib-worker')
    expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([])
  }, 30_000)
})
