// `virt-dib batch` on real builds, two batches over one step cache. The first: two builds of the
// demo elements in two sizes and a layer over the first with a finalise.d element, -j 2 — the
// tree phases run once in all, two appliances run at once, every output is read back, and the
// layer's file is in its image only. The second: a build that fails beside one that succeeds.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { beforeAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, startCli } from '../helpers/cli.js'
import { qemuDescendants } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

interface Event {
  kind: string
  build?: string
  hook?: string
  script?: string
  steps?: string[]
  status?: string
  text?: string
}

interface BatchRun {
  status: number | null
  out: string
  events: Event[]
  /** The most qemu processes alive at once under the CLI. */
  peakAppliances: number
}

describe('virt-dib batch: sharing, layers, -j 2, and a failing build', () => {
  const tmp = tempDir('vdib-batch.')
  const elements = join(tmp, 'elements')
  const out = join(tmp, 'out')
  const cacheDir = join(tmp, 'steps')
  const env = { ...process.env, TMPDIR: tmp }
  let shared: BatchRun
  let failing: BatchRun

  async function batch(file: string, text: string): Promise<BatchRun> {
    writeFileSync(join(out, file), text)
    const events = join(tmp, `${file}.jsonl`)
    const args = ['batch', join(out, file), '-j', '2', '--cache-dir', cacheDir, `--machine-readable=file:${events}`]
    const run = startCli(args, env)
    let peak = 0
    const poll = setInterval(() => {
      if (run.child.pid !== undefined) peak = Math.max(peak, qemuDescendants(run.child.pid).length)
    }, 250)
    const status = await run.exited.finally(() => clearInterval(poll))
    const lines = existsSync(events) ? readFileSync(events, 'utf8').split('\n').filter(Boolean) : []
    return {
      status,
      out: run.out() + run.err(),
      events: lines.map((l) => JSON.parse(l) as Event),
      peakAppliances: peak,
    }
  }

  const tarList = (path: string) => execFileSync('tar', ['-tf', path], { encoding: 'utf8' }).split('\n')
  const tarFile = (path: string, member: string) => execFileSync('tar', ['-xOf', path, member], { encoding: 'utf8' })
  const virtualSize = (path: string) =>
    (
      JSON.parse(execFileSync('qemu-img', ['info', '--output=json', path], { encoding: 'utf8' })) as {
        'virtual-size': number
      }
    )['virtual-size']

  beforeAll(async () => {
    mkdirSync(out, { recursive: true })
    cpSync(join(root, 'examples', 'elements'), elements, { recursive: true })
    for (const e of ['phase-counter', 'layer-stamp', 'failing']) {
      cpSync(join(root, 'test', 'fixtures', 'elements', e), join(elements, e), { recursive: true })
    }
    const defaults = `defaults:
  libPath: ${DIB_LIB}
  elementPaths: [${elements}]
  skipBase: true
  elements: [demo-os, demo-app, phase-counter]
  formats: [tar, qcow2]
`
    shared = await batch(
      'shared.yaml',
      `${defaults}builds:
  - { name: small, size: 1G }
  - { name: big, size: 2G }
  - { name: stamped, base: small, elements: [layer-stamp] }
`,
    )
    failing = await batch(
      'failing.yaml',
      `${defaults}builds:
  - { name: again, size: 1G }
  - { name: broken, elements: [demo-os, failing] }
`,
    )
  }, 900_000)

  it('builds all three and says so in its summary', () => {
    expect(shared.status, shared.out).toBe(0)
    for (const name of ['small', 'big', 'stamped']) expect(shared.out).toMatch(new RegExp(`${name}\\s+ok`))
    const ends = shared.events.filter((e) => e.kind === 'build-end')
    expect(ends.map((e) => [e.build, e.status]).sort()).toEqual([
      ['big', 'ok'],
      ['small', 'ok'],
      ['stamped', 'ok'],
    ])
  })

  it('runs root.d … install.d once in all: the other builds reuse them', () => {
    const ran = shared.events.filter((e) => e.kind === 'script-start' && e.script === '50-phase-counter')
    const count = (hook: string) => ran.filter((e) => e.hook === hook).length
    for (const hook of ['root.d', 'pre-install.d', 'install.d', 'post-install.d']) expect(count(hook), hook).toBe(1)
    // finalise.d and cleanup.d run on each image: its own disk (big), its own elements (stamped).
    expect(count('finalise.d')).toBe(3)
    const hits = (build: string) => shared.events.filter((e) => e.kind === 'cache-hit' && e.build === build)
    // Whichever of the two sizes took the lock first built the tree; the other waited and reused it.
    const reused = ['small', 'big'].filter((b) => hits(b).some((e) => e.steps?.includes('post-install.d')))
    expect(reused).toHaveLength(1)
    expect(hits('stamped').flatMap((e) => e.steps)).toContain('block-device')
  })

  it('ran two appliances at once with -j 2', () => {
    expect(shared.peakAppliances).toBeGreaterThanOrEqual(2)
  })

  it('writes every output, readable, each the size asked', () => {
    for (const name of ['small', 'big', 'stamped']) {
      const list = tarList(join(out, `${name}.tar`))
      expect(list).toContain('./var/lib/phase-counter')
      execFileSync('qemu-img', ['check', join(out, `${name}.qcow2`)])
    }
    expect(virtualSize(join(out, 'small.qcow2'))).toBe(1024 ** 3)
    expect(virtualSize(join(out, 'big.qcow2'))).toBe(2 * 1024 ** 3)
    expect(virtualSize(join(out, 'stamped.qcow2'))).toBe(1024 ** 3)
  })

  it('puts the layer’s file in the layer’s image only, over its base’s tree', () => {
    expect(tarFile(join(out, 'stamped.tar'), './etc/layer-stamp')).toContain('layer-stamp')
    expect(tarList(join(out, 'small.tar'))).not.toContain('./etc/layer-stamp')
    expect(tarList(join(out, 'big.tar'))).not.toContain('./etc/layer-stamp')
    // The layer's tree is its base's: the phases before finalise.d ran once, in the base.
    expect(tarFile(join(out, 'stamped.tar'), './var/lib/phase-counter').split('\n').filter(Boolean)).toEqual([
      'root.d',
      'pre-install.d',
      'install.d',
      'post-install.d',
      'finalise.d',
      'cleanup.d',
    ])
  })

  it('finishes the others when one build fails, exits 1, and says which failed', () => {
    expect(failing.status, failing.out).toBe(1)
    expect(failing.out).toMatch(/again\s+ok/)
    expect(failing.out).toMatch(/broken\s+failed/)
    expect(failing.out).toContain('install.d/20-fail')
    expect(existsSync(join(out, 'again.qcow2'))).toBe(true)
    expect(existsSync(join(out, 'broken.qcow2'))).toBe(false)
    // Nothing half-written beside the outputs, no appliance left.
    expect(readdirSync(out).filter((f) => f.startsWith('.'))).toEqual([])
    expect(qemuDescendants()).toEqual([])
  })
})
