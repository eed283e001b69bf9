// The build queue on real builds: a private redis-server, one `virt-dib worker`, and `virt-dib
// submit --wait` of a batch file with the demo elements and a layer over them. One run feeds every
// check: outputs in place with the sha256 the jobs report, the layer's file in its image only,
// progress lines prefixed on both sides, nothing half-written, and SIGTERM ending the worker with 0.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { jobIdFor } from '../../src/queue/protocol.js'
import { DIB_LIB, root, startCli, type RunningCli } from '../helpers/cli.js'
import { qemuDescendants, waitFor } from '../helpers/processes.js'
import { startRedis, type PrivateRedis } from '../helpers/redis-server.js'
import { tempDir } from '../helpers/temp.js'

interface JobOutput {
  format: string
  path: string
  size: number
  sha256: string
}

describe('virt-dib worker and submit --wait: real builds through Redis', () => {
  const tmp = tempDir('vdib-queue.')
  const elements = join(tmp, 'elements')
  const out = join(tmp, 'out')
  const work = join(tmp, 'work')
  let redis: PrivateRedis
  let worker: RunningCli
  let submit: { status: number | null; out: string; err: string }
  let workerStatus: number | null

  const tarList = (path: string) => execFileSync('tar', ['-tf', path], { encoding: 'utf8' }).split('\n')
  const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')
  const result = async (output: string): Promise<{ outputs: JobOutput[] }> => {
    const raw = await redis.client.hget(`bull:virt-dib:${jobIdFor(output)}`, 'returnvalue')
    return JSON.parse(raw ?? 'null') as { outputs: JobOutput[] }
  }

  beforeAll(async () => {
    mkdirSync(out, { recursive: true })
    mkdirSync(work, { recursive: true })
    cpSync(join(root, 'examples', 'elements'), elements, { recursive: true })
    cpSync(join(root, 'test', 'fixtures', 'elements', 'layer-stamp'), join(elements, 'layer-stamp'), {
      recursive: true,
    })
    redis = await startRedis()
    const env = { ...process.env, TMPDIR: work }
    // prettier-ignore
    worker = startCli([
      'worker', '--redis', redis.url, '-j', '1', '--cache-dir', join(tmp, 'steps'),
      '--allow-elements', elements, DIB_LIB, '--allow-output', out,
    ], env)
    const file = join(tmp, 'images.yaml')
    writeFileSync(
      file,
      `defaults:
  libPath: ${DIB_LIB}
  elementPaths: [${elements}]
  skipBase: true
  elements: [demo-os, demo-app]
  formats: [tar, qcow2]
  size: 1G
builds:
  - { name: out/demo }
  - { name: out/stamped, base: out/demo, elements: [layer-stamp], formats: [tar] }
`,
    )
    const run = startCli(['submit', '--redis', redis.url, file, '--wait'], env)
    submit = { status: await run.exited, out: run.out(), err: run.err() }
    worker.child.kill('SIGTERM')
    workerStatus = await worker.exited
  }, 900_000)

  afterAll(async () => {
    worker?.child.kill('SIGKILL')
    await redis?.stop()
  })

  it('builds both jobs and prints the batch summary', () => {
    expect(submit.status, submit.out + submit.err).toBe(0)
    expect(submit.out).toMatch(/out\/demo\s+ok/)
    expect(submit.out).toMatch(/out\/stamped\s+ok/)
    expect(submit.out).toContain('2 builds: 2 ok, 0 failed, 0 skipped')
  })

  it('follows the builds live, prefixed with their names, on both sides', () => {
    expect(submit.out).toMatch(/^\[out\/demo\] .*install\.d/m)
    expect(worker.out()).toMatch(/^\[out\/demo\] .*install\.d/m)
    expect(worker.out()).toMatch(/^\[out\/stamped\] /m)
  })

  it('puts every output in place with the size and sha256 its job reports', async () => {
    for (const name of ['demo', 'stamped']) {
      const { outputs } = await result(join(out, name))
      expect(outputs.length).toBeGreaterThan(0)
      for (const o of outputs) {
        expect(o.path.startsWith(`${out}/`)).toBe(true)
        expect(readFileSync(o.path).length).toBe(o.size)
        expect(sha256(o.path)).toBe(o.sha256)
      }
    }
    execFileSync('qemu-img', ['check', join(out, 'demo.qcow2')])
    expect(tarList(join(out, 'stamped.tar'))).toContain('./etc/layer-stamp')
    expect(tarList(join(out, 'demo.tar'))).not.toContain('./etc/layer-stamp')
  })

  it('leaves no temporaries beside the outputs, and the worker ends with 0 on SIGTERM, no qemu left', async () => {
    expect(readdirSync(out).filter((f) => f.startsWith('.'))).toEqual([])
    expect(workerStatus, worker.out() + worker.err()).toBe(0)
    expect(await waitFor(() => qemuDescendants().length === 0, 5000)).toBe(true)
    // Its work folder (its builds' TMPDIR) is empty once it stopped.
    const left = existsSync(join(work, 'virt-dib-worker')) ? readdirSync(join(work, 'virt-dib-worker')) : []
    expect(left).toEqual([])
  })
})
