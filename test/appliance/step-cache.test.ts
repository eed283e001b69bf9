// The step cache (--cache) on real builds of the demo elements and a phase-counter probe, one
// cache for five builds: cold; the same under another name (every phase reused); one finalise.d
// script edited; install.d failing; install.d fixed. Each build feeds several assertions.
import { execFileSync } from 'node:child_process'
import { cpSync, readFileSync, readdirSync, utimesSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

import { beforeAll, describe, expect, it } from 'vitest'

import { build, type BuildEvent, type BuildOptions, type BuildResult } from '../../src/index.js'
import { openStore } from '../../src/cache/store.js'
import { ScriptError } from '../../src/errors.js'
import { qemuDescendants } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

const root = resolve(import.meta.dirname, '..', '..')
const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'

interface Run {
  events: BuildEvent[]
  result: BuildResult | undefined
  error: unknown
}

describe('the step cache: cold, warm under another name, a finalise.d edit, install.d failing then fixed', () => {
  const tmp = tempDir('vdib-stepcache.')
  const out = join(tmp, 'out')
  const elements = join(tmp, 'elements')
  const cacheDir = join(tmp, 'steps')
  const runs: Record<string, Run> = {}
  let installEntriesAfterFailure = -1

  const options = (name: string): BuildOptions => ({
    elements: ['demo-os', 'demo-app', 'phase-counter'],
    libPath: LIB,
    elementPaths: [elements],
    skipBase: true,
    formats: ['tar', 'qcow2'],
    name: join(out, name),
    cache: { dir: cacheDir },
    env: { ...process.env, TMPDIR: tmp },
  })

  async function run(name: string): Promise<void> {
    const events: BuildEvent[] = []
    let result: BuildResult | undefined
    let error: unknown
    try {
      result = await build(options(name), { onEvent: (e) => events.push(e) })
    } catch (e) {
      error = e
    }
    runs[name] = { events, result, error }
    const stored = events.flatMap((e) =>
      e.kind === 'cache-store' ? [`${e.step} ${e.seconds.toFixed(2)} s (+${e.writeSeconds.toFixed(2)} s beside)`] : [],
    )
    if (stored.length > 0) console.log(`step-cache ${name}: snapshots ${stored.join(', ')}`)
  }

  /** Edits a script and gives it its old mtime back: the key must follow content, not mtimes. */
  function edit(file: string, change: (s: string) => string): void {
    const st = statSync(file)
    writeFileSync(file, change(readFileSync(file, 'utf8')))
    utimesSync(file, st.atime, st.mtime)
  }

  beforeAll(async () => {
    execFileSync('mkdir', ['-p', out])
    cpSync(join(root, 'examples', 'elements'), elements, { recursive: true })
    cpSync(join(root, 'test', 'fixtures', 'elements', 'phase-counter'), join(elements, 'phase-counter'), {
      recursive: true,
    })
    await run('cold')
    await run('warm')
    edit(
      join(elements, 'demo-app', 'finalise.d', '90-demo-stamp'),
      (s) => `${s}echo edited-finalise >> /etc/demo-built\n`,
    )
    await run('edited')
    const counter = join(elements, 'phase-counter', 'install.d', '50-phase-counter')
    const good = readFileSync(counter, 'utf8')
    edit(counter, (s) => s.replace('set -eu', 'set -eu\necho "install.d breaks" >&2\nexit 3'))
    await run('failed')
    installEntriesAfterFailure = (await (await openStore(cacheDir)).list()).filter((m) => m.step === 'install.d').length
    edit(counter, () => `${good}# fixed\n`)
    await run('fixed')
  }, 20 * 60_000)

  const ran = (name: string) =>
    [...new Set(runs[name]!.events.flatMap((e) => (e.kind === 'script-start' ? [e.hook] : [])))].sort()
  const steps = (name: string) => runs[name]!.events.flatMap((e) => (e.kind === 'step' ? [e.name] : []))
  const hit = (name: string) => runs[name]!.events.find((e) => e.kind === 'cache-hit')
  const miss = (name: string) => runs[name]!.events.find((e) => e.kind === 'cache-miss')
  const tarFile = (name: string, path: string) =>
    execFileSync('tar', ['-xOf', join(out, `${name}.tar`), path], { encoding: 'utf8' })
  /** Every entry of a tarball: type, mode, owner, size and content digest (not mtimes: finalize-image truncates logs now). */
  const contents = (name: string) => {
    const tar = join(out, `${name}.tar`)
    const list = execFileSync('tar', ['-tvf', tar], { encoding: 'utf8', maxBuffer: 64 * 1024 ** 2 })
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace(/ \d{4}-\d\d-\d\d \d\d:\d\d /, ' '))
    const sums = execFileSync('tar', ['-xf', tar, '--to-command=md5sum | sed "s|-|$TAR_FILENAME|"'], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 ** 2,
    })
    return { list, sums: sums.split('\n').sort() }
  }

  it('cold: every phase runs and its snapshot is stored; the miss says nothing was cached yet', () => {
    const r = runs['cold']!
    expect(r.error).toBeUndefined()
    expect(hit('cold')).toBeUndefined()
    expect(miss('cold')).toMatchObject({ step: 'root.d', reason: 'nothing cached for these elements yet' })
    const stored = r.events.flatMap((e) => (e.kind === 'cache-store' ? [e.step] : []))
    expect(stored).toEqual([
      'root.d',
      'extra-data.d',
      'pre-install.d',
      'install.d',
      'post-install.d',
      'block-device',
      'finalise.d',
      'cleanup.d',
    ])
    expect(tarFile('cold', './var/lib/phase-counter')).toBe(
      'root.d\npre-install.d\ninstall.d\npost-install.d\nfinalise.d\ncleanup.d\n',
    )
  })

  it('warm under another name: every phase is reused, nothing runs but the outputs; the same files', () => {
    const r = runs['warm']!
    expect(r.error).toBeUndefined()
    expect(hit('warm')).toMatchObject({ steps: expect.arrayContaining(['root.d', 'cleanup.d']) as unknown })
    expect(ran('warm')).toEqual([])
    expect(steps('warm')).toEqual([
      'prepare-aux',
      'appliance',
      'aux-image',
      'launch',
      'resume',
      'extract-data',
      'finalize-image',
      'freeze-image',
      'tree-archive',
      'shutdown',
      'tar',
      'qcow2',
    ])
    expect(r.events.some((e) => e.kind === 'cache-store')).toBe(false)
    expect(contents('warm')).toEqual(contents('cold'))
    expect(r.result!.outputs.map((o) => o.path).sort()).toEqual([join(out, 'warm.qcow2'), join(out, 'warm.tar')])
    expect(readdirSync(tmp).filter((d) => d.startsWith('dib.'))).toEqual([])
  })

  it('a finalise.d script edited (same mtime): everything up to the block-device step reused, finalise.d and cleanup.d run', () => {
    expect(runs['edited']!.error).toBeUndefined()
    expect(hit('edited')!.kind === 'cache-hit' && hit('edited')!.steps.at(-1)).toBe('block-device')
    expect(miss('edited')).toMatchObject({ step: 'finalise.d', reason: 'its scripts changed' })
    expect(ran('edited')).toEqual(['cleanup.d', 'finalise.d'])
    expect(tarFile('edited', './etc/demo-built')).toMatch(/edited-finalise\n$/)
    // The restored tree's phases ran once, in the build that stored it; the rest once here.
    expect(tarFile('edited', './var/lib/phase-counter')).toBe(tarFile('cold', './var/lib/phase-counter'))
  })

  it('install.d failing: a ScriptError whose hint says a re-run resumes after pre-install.d; the failed phase is not stored', () => {
    const r = runs['failed']!
    expect(r.error).toBeInstanceOf(ScriptError)
    expect((r.error as ScriptError).hook).toBe('install.d')
    expect((r.error as ScriptError).hint).toMatch(/a re-run with the same cache options resumes after pre-install\.d/)
    expect(hit('failed')!.kind === 'cache-hit' && hit('failed')!.steps.at(-1)).toBe('pre-install.d')
    expect(r.events.some((e) => e.kind === 'cache-store')).toBe(false)
    expect(installEntriesAfterFailure).toBe(1) // the cold build's
    expect(qemuDescendants()).toEqual([])
  })

  it('install.d fixed: it runs again, root.d and pre-install.d do not; each phase ran once for the image', () => {
    expect(runs['fixed']!.error).toBeUndefined()
    expect(hit('fixed')!.kind === 'cache-hit' && hit('fixed')!.steps.at(-1)).toBe('pre-install.d')
    expect(ran('fixed')).toEqual(['cleanup.d', 'finalise.d', 'install.d', 'post-install.d'])
    expect(tarFile('fixed', './var/lib/phase-counter')).toBe(tarFile('cold', './var/lib/phase-counter'))
  })
})
