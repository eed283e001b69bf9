// A worker SIGKILLed in the middle of a real build (opt-in tier): its qemu dies with it (libguestfs's
// recovery process), BullMQ's stalled check hands the job to the other worker, which builds it; the
// output is whole, nothing of the dead worker is left beside it, and `submit --wait` of the same
// file follows the job that was already queued.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, startCli, type RunningCli } from '../helpers/cli.js'
import { alive, qemuDescendants, waitFor } from '../helpers/processes.js'
import { startRedis, type PrivateRedis } from '../helpers/redis-server.js'
import { tempDir } from '../helpers/temp.js'

describe('virt-dib worker: SIGKILL during a real build', () => {
  const tmp = tempDir('vdib-queue-kill.')
  const out = join(tmp, 'out')
  const elements = join(root, 'examples', 'elements')
  let redis: PrivateRedis | undefined
  const workers: RunningCli[] = []

  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL')
    await Promise.all(workers.map((w) => w.exited))
    await redis?.stop()
  })

  it(
    'the job completes on the other worker; no qemu of the dead one survives',
    async () => {
      mkdirSync(out, { recursive: true })
      redis = await startRedis()
      const worker = (name: string) => {
        // One TMPDIR for both, as on a real host: a worker sweeps the dead workers' folders there.
        const work = join(tmp, 'work')
        mkdirSync(work, { recursive: true })
        // prettier-ignore
        const w = startCli([
        'worker', '--redis', redis!.url, '--lock-duration', '5s', '--cache-dir', join(tmp, `steps-${name}`),
        '--allow-elements', elements, DIB_LIB, '--allow-output', out,
      ], { ...process.env, TMPDIR: work })
        workers.push(w)
        return w
      }
      const file = join(tmp, 'one.yaml')
      writeFileSync(
        file,
        `defaults:
  libPath: ${DIB_LIB}
  elementPaths: [${elements}]
  skipBase: true
  elements: [demo-os, demo-app]
  formats: [tar, qcow2]
builds:
  - { name: out/demo }
`,
      )
      const first = worker('a')
      // Only one worker at first: it takes the job.
      const submitted = startCli(['submit', '--redis', redis.url, file], process.env)
      expect(await submitted.exited, submitted.out() + submitted.err()).toBe(0)
      const running = await waitFor(
        () => /\[out\/demo\] .*install\.d/.test(first.out()) && qemuDescendants(first.child.pid).length > 0,
        5 * 60_000,
        200,
      )
      expect(running, first.out() + first.err()).toBe(true)
      const qemu = qemuDescendants(first.child.pid).map((p) => p.pid)
      const second = worker('b')
      first.child.kill('SIGKILL')
      await first.exited
      expect(await waitFor(() => qemu.every((pid) => !alive(pid)), 10_000)).toBe(true)

      const follow = startCli(['submit', '--redis', redis.url, file, '--wait'], process.env)
      expect(await follow.exited, follow.out() + follow.err()).toBe(0)
      expect(follow.out()).toMatch(/already queued/)
      expect(follow.out()).toMatch(/out\/demo\s+ok/)
      expect(second.out()).toMatch(/delivery 2/)
      execFileSync('qemu-img', ['check', join(out, 'demo.qcow2')])
      expect(execFileSync('tar', ['-tf', join(out, 'demo.tar')], { encoding: 'utf8' })).toContain('./etc/demo-built')
      // The survivor swept the dead worker's staging folder and work dir.
      expect(await waitFor(() => readdirSync(out).every((f) => !f.startsWith('.')), 10_000)).toBe(true)
      const root = join(tmp, 'work', 'virt-dib-worker')
      const left = () => (existsSync(root) ? readdirSync(root) : [])
      expect(left().filter((d) => d.endsWith(`.${first.child.pid}`))).toEqual([])
    },
    30 * 60_000,
  )
})
