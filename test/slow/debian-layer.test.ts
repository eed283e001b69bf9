// Batch layers on the real thing (opt-in, slow under TCG): a debian-minimal vm base with the step
// cache, then two layers over it — one adding a package through package-installs (it starts at
// extra-data.d, after the base's debootstrap), one adding a finalise.d script (it starts at
// finalise.d, on the base's disk). Times are printed for the notes.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { buildPlanned, planBuild, type BuildEvent, type BuildOptions, type BuildPlan } from '../../src/index.js'
import { planLayer } from '../../src/api/plan-layer.js'
import { DIB_ELEMENTS, DIB_LIB } from '../helpers/cli.js'
import { debianEnvvars } from '../helpers/mirror.js'

const fixtures = resolve(import.meta.dirname, '..', 'fixtures', 'elements')

interface Timed {
  events: BuildEvent[]
  seconds: number
}

describe('layers over a debian-minimal vm base: a package, a finalise.d script', () => {
  const out = mkdtempSync(join(tmpdir(), 'vdib-deblayer.'))
  const runs: Record<string, Timed> = {}
  const plans: Record<string, BuildPlan> = {}

  const options = (name: string, extra: string[]): BuildOptions => {
    return {
      elements: ['debian-minimal', 'vm', ...extra],
      libPath: DIB_LIB,
      elementPaths: [DIB_ELEMENTS, fixtures],
      envvars: debianEnvvars(),
      memsize: 2048,
      smp: 2,
      size: 3 * 1024 ** 3,
      formats: ['tar'],
      name: join(out, name),
      cache: { dir: join(out, 'steps') },
    }
  }

  async function timed(name: string, plan: BuildPlan): Promise<void> {
    plans[name] = plan
    const events: BuildEvent[] = []
    const t = Date.now()
    await buildPlanned(plan, {
      onEvent: (e) => {
        events.push(e)
        if (['cache-hit', 'cache-miss', 'warning', 'info'].includes(e.kind)) console.log(name, JSON.stringify(e))
      },
    })
    runs[name] = { events, seconds: (Date.now() - t) / 1000 }
    console.log(`debian layer test ${name}: ${runs[name].seconds.toFixed(0)} s`)
  }

  const tarList = (name: string) =>
    execFileSync('tar', ['-tf', join(out, `${name}.tar`)], { encoding: 'utf8', maxBuffer: 1 << 28 }).split('\n')
  const dpkgStatus = (name: string) =>
    execFileSync('tar', ['-xOf', join(out, `${name}.tar`), './var/lib/dpkg/status'], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    })

  beforeAll(async () => {
    const base = planBuild(options('base', []))
    await timed('base', base)
    await timed('package', await planLayer(options('package', ['layer-package']), { base, baseName: 'base' }))
    await timed('stamp', await planLayer(options('stamp', ['layer-stamp']), { base, baseName: 'base' }))
  }, 180 * 60_000)
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  it('the package layer starts at extra-data.d from the base’s root.d and has the package', () => {
    expect(plans['package']!.layer?.from).toBe('extra-data.d')
    const hit = runs['package']!.events.find((e) => e.kind === 'cache-hit')
    expect(hit?.kind === 'cache-hit' && hit.steps).toEqual(['root.d'])
    expect(dpkgStatus('package')).toMatch(/^Package: tree$/m)
    expect(tarList('package')).toContain('./usr/bin/tree')
    expect(dpkgStatus('base')).not.toMatch(/^Package: tree$/m)
  })

  it('the finalise.d layer starts on the base’s disk and costs a fraction of the base', () => {
    expect(plans['stamp']!.layer?.from).toBe('finalise.d')
    const hit = runs['stamp']!.events.find((e) => e.kind === 'cache-hit')
    expect(hit?.kind === 'cache-hit' && hit.steps).toContain('block-device')
    expect(tarList('stamp')).toContain('./etc/layer-stamp')
    expect(tarList('base')).not.toContain('./etc/layer-stamp')
    expect(plans['stamp']!.rootFsUuid).toBe(plans['base']!.rootFsUuid)
    console.log(
      `debian layers: base ${runs['base']!.seconds.toFixed(0)} s, package layer ${runs['package']!.seconds.toFixed(0)} s, finalise.d layer ${runs['stamp']!.seconds.toFixed(0)} s`,
    )
  })
})
