// The step cache on the real thing (opt-in, slow under TCG): debian-minimal vm built cold with
// --cache, then again with one finalise.d script changed: everything up to the block-device step
// comes from the cache. Both times are printed for the notes; the targets are the bench's, not here.
import { execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { build, type BuildEvent, type BuildOptions, type BuildResult } from '../../src/index.js'
import { openStore } from '../../src/cache/store.js'
import { DIB_ELEMENTS, DIB_LIB } from '../helpers/cli.js'
import { debianEnvvars } from '../helpers/mirror.js'

const fixtures = resolve(import.meta.dirname, '..', 'fixtures', 'elements')

interface Timed {
  result: BuildResult
  events: BuildEvent[]
  seconds: number
}

describe('debian-minimal vm with --cache: cold, then one finalise.d script changed', () => {
  const out = mkdtempSync(join(tmpdir(), 'vdib-debcache.'))
  const stamp = join(out, 'elements', 'finalise-stamp')
  const script = join(stamp, 'finalise.d', '95-finalise-stamp')
  const runs: Record<string, Timed> = {}
  let cacheBytes = 0
  let treeBytes = 0

  const options = (name: string): BuildOptions => {
    return {
      elements: ['debian-minimal', 'vm', 'finalise-stamp'],
      libPath: DIB_LIB,
      elementPaths: [DIB_ELEMENTS, join(out, 'elements')],
      envvars: debianEnvvars(),
      memsize: 2048,
      smp: 2,
      size: 3 * 1024 ** 3,
      formats: ['tar', 'qcow2'],
      name: join(out, name),
      cache: { dir: join(out, 'steps') },
    }
  }

  async function timed(name: string): Promise<void> {
    const events: BuildEvent[] = []
    const t = Date.now()
    const result = await build(options(name), {
      onEvent: (e) => {
        events.push(e)
        if (['cache-hit', 'cache-miss', 'cache-store', 'step', 'warning'].includes(e.kind))
          console.log(JSON.stringify(e))
      },
    })
    runs[name] = { result, events, seconds: (Date.now() - t) / 1000 }
    console.log(`debian-minimal vm --cache ${name}: ${runs[name].seconds.toFixed(0)} s`)
  }

  beforeAll(async () => {
    cpSync(join(fixtures, 'finalise-stamp'), stamp, { recursive: true })
    await timed('cold')
    const store = await openStore(join(out, 'steps'))
    cacheBytes = await store.totalBytes()
    // The tar output is the tree (with its headers): the size the cache is measured against.
    treeBytes = statSync(join(out, 'cold.tar')).size
    console.log(
      `cache after the cold build: ${(cacheBytes / 1024 ** 2).toFixed(0)} MiB, the tree ${(treeBytes / 1024 ** 2).toFixed(0)} MiB (${(cacheBytes / treeBytes).toFixed(2)}×)`,
    )
    writeFileSync(script, readFileSync(script, 'utf8').replace('stamp one', 'stamp two'))
    await timed('edited')
  }, 150 * 60_000)
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  const tarFile = (name: string, path: string) =>
    execFileSync('tar', ['-xOf', join(out, `${name}.tar`), path], { encoding: 'utf8' })

  it('the cold build writes its outputs and stores a snapshot after every phase that ran', () => {
    expect(runs['cold']!.result.outputs.map((o) => o.format).sort()).toEqual(['qcow2', 'tar'])
    const stored = runs['cold']!.events.flatMap((e) => (e.kind === 'cache-store' ? [e.step] : []))
    expect(stored).toEqual(expect.arrayContaining(['root.d', 'install.d', 'block-device', 'finalise.d']))
    expect(tarFile('cold', './etc/finalise-stamp')).toBe('stamp one\n')
  })

  it("a cold build's cache holds at most twice the tree's size", () => {
    expect(cacheBytes).toBeGreaterThan(0)
    expect(cacheBytes).toBeLessThanOrEqual(2 * treeBytes)
  })

  it('the edited build reuses everything up to the block-device step; its image has the change and the same root', () => {
    const e = runs['edited']!
    const hit = e.events.find((x) => x.kind === 'cache-hit')
    expect(hit?.kind === 'cache-hit' && hit.steps.at(-1)).toBe('block-device')
    const ran = new Set(e.events.flatMap((x) => (x.kind === 'script-start' ? [x.hook] : [])))
    expect([...ran].sort()).toEqual(['cleanup.d', 'finalise.d'])
    expect(tarFile('edited', './etc/finalise-stamp')).toBe('stamp two\n')
    expect(tarFile('edited', './etc/fstab')).toBe(tarFile('cold', './etc/fstab'))
    console.log(
      `warm rebuild / cold build: ${(e.seconds / runs['cold']!.seconds).toFixed(3)} (${e.seconds.toFixed(0)} s / ${runs['cold']!.seconds.toFixed(0)} s)`,
    )
  })
})
