// The step cache's keys over real plans of a copy of the demo elements: content edits miss (even
// when the mtime is kept), mtimes, --name and secrets' values never reach the key or its inputs,
// --size only reaches the disk steps; and the tree hash, the phase names, the boundaries.
import { chmodSync, cpSync, mkdirSync, readFileSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import {
  CACHED_STEPS,
  PHASE_HOOKS,
  PHASE_STEP_NAMES,
  canonicalJson,
  diffInputs,
  hashFile,
  hashTree,
  normalizePhaseName,
  stepKeys,
  type StepKey,
} from '../../../src/cache/keys.js'
import type { BuildPlan } from '../../../src/engine/plan.js'
import { planSteps } from '../../../src/engine/steps.js'
import { extraPackages } from '../../../src/phases/extra-packages.js'
import { PHASES, PHASE_BY_HOOK } from '../../../src/phases/registry.js'
import { DIB_LIB, root } from '../../helpers/cli.js'
import { demoOptions } from '../../helpers/demo-options.js'
import { tempDir } from '../../helpers/temp.js'

const phaseFacts = (h: string) => PHASE_BY_HOOK.get(h) ?? (h === 'extra-packages' ? extraPackages : undefined)
const libHash = hashTree(DIB_LIB)

/** A fresh copy of the demo elements, with a static/ file and a package list added to demo-os. */
function elementCopy(): { tmp: string; elements: string } {
  const tmp = tempDir('vdib-keys.')
  const elements = join(tmp, 'elements')
  cpSync(join(root, 'examples', 'elements'), elements, { recursive: true })
  mkdirSync(join(elements, 'demo-os', 'static', 'etc'), { recursive: true })
  writeFileSync(join(elements, 'demo-os', 'static', 'etc', 'motd'), 'hello\n')
  writeFileSync(join(elements, 'demo-os', 'package-installs.yaml'), 'vim:\n')
  // Whole-second mtimes: editKeepingMtime restores them exactly.
  for (const f of [join('demo-os', 'static', 'etc', 'motd'), join('demo-os', 'package-installs.yaml')]) {
    utimesSync(join(elements, f), 1_700_000_000, 1_700_000_000)
  }
  utimesSync(join(elements, 'demo-app', 'finalise.d', '90-demo-stamp'), 1_700_000_000, 1_700_000_000)
  return { tmp, elements }
}

function plan(tmp: string, elements: string, o: Partial<BuildOptions> = {}): BuildPlan {
  return planBuild(
    demoOptions(tmp, {
      elements: ['demo-os', 'demo-app'],
      elementPaths: [elements],
      imageCache: join(tmp, 'cache'),
      argv: ['virt-dib', '--name', o.name ?? join(tmp, 'img'), 'demo-os', 'demo-app'],
      ...o,
    }),
    { seed: 'keys-test' },
  )
}

function keys(p: BuildPlan, over: Partial<BuildPlan> = {}): StepKey[] {
  const q = { ...p, ...over }
  return stepKeys(q, planSteps(q), { applianceKey: 'appliance-1', libHash, guestFilesHash: 'guest-1', phaseFacts })
}

/** Steps whose keys differ between two runs over the same steps. */
function changed(a: StepKey[], b: StepKey[]): string[] {
  expect(a.map((k) => k.step)).toEqual(b.map((k) => k.step))
  return a.filter((k, i) => k.key !== b[i]!.key).map((k) => k.step)
}

/** Rewrites a file, keeping its mtime (whole seconds, which utimes keeps exactly) and size. */
function editKeepingMtime(path: string, edit: (s: string) => string): void {
  const before = readFileSync(path, 'utf8')
  const after = edit(before)
  expect(after.length).toBe(before.length)
  const mtime = statSync(path).mtimeMs
  writeFileSync(path, after)
  utimesSync(path, mtime / 1000, mtime / 1000)
  expect(statSync(path).mtimeMs).toBe(mtime)
}

const TREE_STEPS = [
  'build-root',
  'root.d',
  'install-type',
  'extra-data.d',
  'extra-data-unmount',
  'pre-install.d',
  'install.d',
  'post-install.d',
  'post-root.d',
]
const DISK_STEPS = ['block-device.d', 'block-device', 'pre-finalise.d', 'finalise.d', 'cleanup.d']

describe('step keys', () => {
  it('chain the cached steps in table order, leaving out the engine and output steps', () => {
    const { tmp, elements } = elementCopy()
    const ks = keys(plan(tmp, elements), { buildInPlace: false })
    expect(ks.map((k) => k.step)).toEqual([...TREE_STEPS, ...DISK_STEPS])
    for (let i = 1; i < ks.length; i++) expect(ks[i]!.parent).toBe(ks[i - 1]!.key)
    expect(ks[0]!.parent).toBe('')
    expect(new Set(ks.map((k) => k.key)).size).toBe(ks.length)
    for (const k of ks) expect(k.key).toMatch(/^[0-9a-f]{64}$/)
    // extra-data.d's snapshot waits for its unmount; build-root, install-type and block-device.d have none.
    expect(ks.filter((k) => k.boundary).map((k) => k.step)).toEqual([
      'root.d',
      'extra-data-unmount',
      'pre-install.d',
      'install.d',
      'post-install.d',
      'post-root.d',
      'block-device',
      'pre-finalise.d',
      'finalise.d',
      'cleanup.d',
    ])
    // Equal plans, equal keys.
    expect(keys(plan(tmp, elements), { buildInPlace: false })).toEqual(ks)
  })

  it('an edit of a finalise.d script that keeps the mtime changes finalise.d and what follows only', () => {
    const { tmp, elements } = elementCopy()
    const before = keys(plan(tmp, elements))
    editKeepingMtime(join(elements, 'demo-app', 'finalise.d', '90-demo-stamp'), (s) => s.replace(/e/, 'E'))
    const after = keys(plan(tmp, elements))
    expect(changed(before, after)).toEqual(['finalise.d', 'cleanup.d'])
    const f = after.find((k) => k.step === 'finalise.d')!
    const g = before.find((k) => k.step === 'finalise.d')!
    expect(diffInputs(f.inputs, g.inputs)).toEqual(['script:90-demo-stamp', 'scripts'])
  })

  it('a script made executable (or not) counts; its mode is keyed, never its mtime', () => {
    const { tmp, elements } = elementCopy()
    const script = join(elements, 'demo-app', 'finalise.d', '90-demo-stamp')
    const before = keys(plan(tmp, elements))
    utimesSync(script, new Date(1_000_000), new Date(2_000_000))
    utimesSync(join(elements, 'demo-os', 'static', 'etc', 'motd'), new Date(1_000_000), new Date(2_000_000))
    expect(changed(before, keys(plan(tmp, elements)))).toEqual([])
    chmodSync(script, 0o644)
    expect(changed(before, keys(plan(tmp, elements)))).toEqual(['finalise.d', 'cleanup.d'])
  })

  it('a static/ file or package-installs.yaml edited (mtime kept) changes every key from the first phase', () => {
    const { tmp, elements } = elementCopy()
    const all = keys(plan(tmp, elements)).map((k) => k.step)
    for (const rel of [join('static', 'etc', 'motd'), 'package-installs.yaml']) {
      const before = keys(plan(tmp, elements))
      editKeepingMtime(join(elements, 'demo-os', rel), (s) => s.toUpperCase())
      const after = keys(plan(tmp, elements))
      expect(changed(before, after)).toEqual(all)
      const r = (ks: StepKey[]) => ks.find((k) => k.step === 'root.d')!.inputs
      expect(diffInputs(r(after), r(before))).toEqual(['element-files:demo-os'])
    }
  })

  it('a file a symbolic link points at counts as its content', () => {
    const { tmp, elements } = elementCopy()
    writeFileSync(join(tmp, 'shared.txt'), 'one\n')
    symlinkSync(join(tmp, 'shared.txt'), join(elements, 'demo-os', 'shared.txt'))
    const before = keys(plan(tmp, elements))
    writeFileSync(join(tmp, 'shared.txt'), 'two\n')
    expect(changed(before, keys(plan(tmp, elements)))[0]).toBe('build-root')
  })

  it('another --name (and argv with it) keeps every key', () => {
    const { tmp, elements } = elementCopy()
    const a = keys(plan(tmp, elements, { name: join(tmp, 'one') }))
    const b = keys(plan(tmp, elements, { name: join(tmp, 'two') }))
    expect(changed(a, b)).toEqual([])
  })

  it('unseeded plans (a random root file system UUID) share the tree keys only', () => {
    const { tmp, elements } = elementCopy()
    const unseeded = () =>
      planBuild(
        demoOptions(tmp, { elements: ['demo-os', 'demo-app'], elementPaths: [elements], imageCache: join(tmp, 'c') }),
      )
    const a = keys(unseeded(), { buildInPlace: false })
    const b = keys(unseeded(), { buildInPlace: false })
    expect(changed(a, b)).toEqual(DISK_STEPS)
  })

  it('another --size keeps the tree phases and changes block-device.d and after', () => {
    const { tmp, elements } = elementCopy()
    const a = keys(plan(tmp, elements, { size: 2 * 1024 ** 3 }), { buildInPlace: false })
    const b = keys(plan(tmp, elements, { size: 3 * 1024 ** 3 }), { buildInPlace: false })
    expect(changed(a, b)).toEqual(DISK_STEPS)
    const bd = (ks: StepKey[]) => ks.find((k) => k.step === 'block-device')!.inputs
    expect(diffInputs(bd(a), bd(b))).toEqual(['disk:layout', 'disk:override-layout', 'disk:size'])
    // Built in place, the tree is on the layout: the size counts from the first step.
    const c = keys(plan(tmp, elements, { size: 2 * 1024 ** 3 }), { buildInPlace: true })
    const d = keys(plan(tmp, elements, { size: 3 * 1024 ** 3 }), { buildInPlace: true })
    expect(changed(c, d)).toEqual([...TREE_STEPS, ...DISK_STEPS])
  })

  it('--checksum and --formats keep the tree phases: builds differing in them share their tree', () => {
    const { tmp, elements } = elementCopy()
    const a = keys(plan(tmp, elements, { checksum: false, formats: ['qcow2'] }), { buildInPlace: false })
    const b = keys(plan(tmp, elements, { checksum: true, formats: ['tar', 'raw'] }), { buildInPlace: false })
    // DIB_CHECKSUM is seen by the phases from block-device.d on (of those, the ones with scripts).
    expect(TREE_STEPS.filter((s) => changed(a, b).includes(s))).toEqual([])
    expect(changed(a, b)).toContain('finalise.d')
  })

  it('an --envvar value changes the keys of the phases; the inputs hold its hash, never the value', () => {
    const { tmp, elements } = elementCopy()
    const secret = 'hunter2-not-in-the-metadata'
    const a = keys(plan(tmp, elements, { envvars: [{ name: 'DIB_TOKEN', value: secret }] }))
    const b = keys(plan(tmp, elements, { envvars: [{ name: 'DIB_TOKEN', value: `${secret}!` }] }))
    expect(changed(a, b)).toEqual([...TREE_STEPS.slice(1), ...DISK_STEPS])
    const root = a.find((k) => k.step === 'root.d')!
    expect(root.inputs['env:DIB_TOKEN']).toMatch(/^[0-9a-f]{64}$/)
    expect(JSON.stringify(a)).not.toContain(secret)
    expect(JSON.stringify(a)).not.toContain('hunter2')
  })

  it('the caller environment: a DIB_* variable counts for extra-data.d (and DIB_ENV), its value stays out', () => {
    const { tmp, elements } = elementCopy()
    const env = (v: string) => ({ env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: tmp, DIB_MIRROR: v } })
    const a = keys(plan(tmp, elements, env('http://one.example')))
    const b = keys(plan(tmp, elements, env('http://two.example')))
    expect(changed(a, b)).toEqual([...TREE_STEPS.slice(1), ...DISK_STEPS])
    const x = (ks: StepKey[]) => ks.find((k) => k.step === 'extra-data.d')!.inputs
    expect(diffInputs(x(a), x(b))).toEqual(['env:DIB_ENV', 'env:DIB_MIRROR'])
    expect(JSON.stringify(a)).not.toContain('one.example')
    // Not DIB_*: the host process's business.
    const c = keys(plan(tmp, elements, { env: { ...env('x').env, SSH_AUTH_SOCK: '/tmp/a' } }))
    const d = keys(plan(tmp, elements, { env: { ...env('x').env, SSH_AUTH_SOCK: '/tmp/b' } }))
    expect(changed(c, d)).toEqual([])
  })

  it('the options that change the tree count; the appliance, lib and guest files are inputs of every step', () => {
    const { tmp, elements } = elementCopy()
    const p = plan(tmp, elements)
    const base = keys(p)
    expect(changed(base, keys(plan(tmp, elements, { network: false })))).toEqual(base.map((k) => k.step))
    expect(changed(base, keys(plan(tmp, elements, { installType: 'package' })))[0]).toBe('install-type')
    const other = stepKeys(p, planSteps(p), {
      applianceKey: 'appliance-2',
      libHash,
      guestFilesHash: 'guest-1',
      phaseFacts,
    })
    expect(changed(base, other)).toEqual(base.map((k) => k.step))
    const withPkgs = plan(tmp, elements, { extraPackages: ['vim'] })
    expect(keys(withPkgs).map((k) => k.step)).toContain('extra-packages')
    const pkgs = (ps: string[]) => keys(plan(tmp, elements, { extraPackages: ps }))
    expect(changed(pkgs(['vim']), pkgs(['emacs']))[0]).toBe('extra-packages')
    for (const k of base) {
      expect(Object.keys(k.inputs)).toEqual(expect.arrayContaining(['lib', 'guest-files', 'appliance', 'option:arch']))
    }
  })
})

describe('hashTree', () => {
  it('hashes names, modes, contents and link targets; not mtimes', () => {
    const d = tempDir('vdib-tree.')
    mkdirSync(join(d, 'sub'))
    writeFileSync(join(d, 'sub', 'a'), 'a')
    symlinkSync('sub/a', join(d, 'link'))
    symlinkSync('nowhere', join(d, 'dangling'))
    symlinkSync('.', join(d, 'sub', 'loop'))
    symlinkSync('/', join(d, 'sub', 'slash'))
    const h = hashTree(d)
    utimesSync(join(d, 'sub', 'a'), new Date(5), new Date(5))
    expect(hashTree(d)).toBe(h)
    chmodSync(join(d, 'sub', 'a'), 0o600)
    const h2 = hashTree(d)
    expect(h2).not.toBe(h)
    writeFileSync(join(d, 'sub', 'b'), '')
    expect(hashTree(d)).not.toBe(h2)
    expect(hashTree(d, { skip: (rel) => rel === 'sub/b' })).toBe(h2)
  })
})

describe('phase names', () => {
  it('take the hook with or without .d, extra-packages and the block-device step', () => {
    expect(normalizePhaseName('install')).toBe('install.d')
    expect(normalizePhaseName('install.d')).toBe('install.d')
    expect(normalizePhaseName('pre-finalise')).toBe('pre-finalise.d')
    expect(normalizePhaseName('extra-data')).toBe('extra-data.d')
    expect(normalizePhaseName('extra-packages')).toBe('extra-packages')
    expect(normalizePhaseName('block-device')).toBe('block-device')
    expect(normalizePhaseName('block-device.d')).toBe('block-device.d')
    for (const bad of ['', 'install.d.d', 'finalize', 'Install', 'launch', 'extra-packages.d', '.d']) {
      expect(normalizePhaseName(bad)).toBeUndefined()
    }
    for (const n of PHASE_STEP_NAMES) expect(normalizePhaseName(n)).toBe(n)
  })

  it('know every phase of the registry, and every cached step is a step of the table', () => {
    expect([...PHASE_HOOKS]).toEqual(PHASES.map((p) => p.hook))
    const { tmp, elements } = elementCopy()
    const names = planSteps(plan(tmp, elements, { extraPackages: ['vim'] })).map((s) => s.name)
    for (const s of Object.keys(CACHED_STEPS)) expect(names).toContain(s)
    for (const s of PHASE_STEP_NAMES) expect(CACHED_STEPS[s]).toBeDefined()
  })

  it('canonical JSON sorts keys and Maps', () => {
    expect(
      canonicalJson({
        b: 1,
        a: [
          new Map([
            ['y', 1],
            ['x', 2],
          ]),
        ],
        c: undefined,
      }),
    ).toBe('{"a":[[["x",2],["y",1]]],"b":1}')
  })
})

describe('hashFile', () => {
  it('reads a file once per identity and change time: an edit of the same size is read again', async () => {
    const d = tempDir('vdib-hashfile.')
    const f = join(d, 'data')
    writeFileSync(f, 'aaaa')
    const first = hashFile(f)
    expect(hashFile(f)).toBe(first)
    // The change time moves on with the kernel's clock tick.
    await new Promise((r) => setTimeout(r, 20))
    writeFileSync(f, 'bbbb')
    expect(hashFile(f)).not.toBe(first)
    expect(hashFile(f)).toBe('81cc5b17018674b401b42f35ba07bb79e211239c23bffe658da1577e3e646877')
  })
})
