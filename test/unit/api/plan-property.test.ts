// Property: whatever options, element trees (deps, provides, hooks, symbolic links and loops)
// and block-device YAML the planner is given, it returns a plan or throws a VirtDibError, never
// anything else (a TypeError is a bug). At least a third of the generated inputs must plan, so
// that the run explores the planner, not only its parsers. Fixed seed, bounded runs.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

import fc from 'fast-check'
import { stringify } from 'yaml'
import { afterAll, describe, expect, it } from 'vitest'

import type { BuildOptions, OutputFormatName } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import { VirtDibError } from '../../../src/errors.js'
import { DIB_LIB } from '../../helpers/cli.js'

const tmp = mkdtempSync(join(tmpdir(), 'vdib-plan-prop.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

// ---- element trees ---------------------------------------------------------------------------

/** Mostly valid values, now and then an invalid one: every option gets explored, most plans plan. */
function mostly<T>(valid: fc.Arbitrary<T>, invalid: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return fc.oneof({ weight: 50, arbitrary: valid }, { weight: 1, arbitrary: invalid })
}
const none = fc.constant(undefined)

const NAMES = ['os', 'app', 'lib', 'extra', 'tools'] as const
const HOOKS = ['root.d', 'install.d', 'post-install.d', 'environment.d', 'block-device.d', 'static', 'tests', 'bin']
const FILE_NAMES = ['10-a', '20-b', '50-run', 'bad name', '01-sahara-version', 'x.pyc', '99_z', 'data.conf']
const LINK_TARGETS = ['.', '..', '/', '../nowhere', '/nonexistent', '10-a', '../bin', '../../app', 'loop-b']

interface ElementGen {
  deps: string[]
  provides: string[]
  files: { hook: string; name: string; exec: boolean }[]
  links: { hook: string; name: string; target: string }[]
  blockDevice?: string
}

const elementGen = (yaml: fc.Arbitrary<string | undefined>): fc.Arbitrary<ElementGen> =>
  fc.record(
    {
      deps: mostly(fc.subarray([...NAMES, 'virtual'], { maxLength: 2 }), fc.constant<string[]>(['missing'])),
      provides: fc.oneof(
        { weight: 12, arbitrary: fc.constant([] as string[]) },
        { weight: 1, arbitrary: fc.subarray(['operating-system', 'virtual', 'os'], { maxLength: 2 }) },
      ),
      files: fc.array(
        fc.record({ hook: fc.constantFrom(...HOOKS), name: fc.constantFrom(...FILE_NAMES), exec: fc.boolean() }),
        { maxLength: 5 },
      ),
      links: fc.oneof(
        { weight: 6, arbitrary: fc.constant<ElementGen['links']>([]) },
        {
          weight: 1,
          arbitrary: fc.array(
            fc.record({
              hook: fc.constantFrom(...HOOKS),
              name: fc.constantFrom('link', 'loop-a', 'loop-b', '30-linked'),
              target: fc.constantFrom(...LINK_TARGETS),
            }),
            { maxLength: 2 },
          ),
        },
      ),
      blockDevice: yaml,
    },
    { requiredKeys: ['deps', 'provides', 'files', 'links'] },
  )

function writeElements(root: string, elements: Record<string, ElementGen>): void {
  for (const [name, e] of Object.entries(elements)) {
    const dir = join(root, name)
    mkdirSync(dir, { recursive: true })
    if (e.deps.length > 0) writeFileSync(join(dir, 'element-deps'), e.deps.join('\n') + '\n')
    if (e.provides.length > 0) writeFileSync(join(dir, 'element-provides'), e.provides.join('\n') + '\n')
    for (const f of e.files) {
      const p = join(dir, f.hook, f.name)
      mkdirSync(dirname(p), { recursive: true })
      writeFileSync(p, '#!/bin/sh\n')
      chmodSync(p, f.exec ? 0o755 : 0o644)
    }
    for (const l of e.links) {
      const p = join(dir, l.hook, l.name)
      mkdirSync(dirname(p), { recursive: true })
      try {
        symlinkSync(l.target === 'loop-b' ? (l.name === 'loop-a' ? 'loop-b' : 'loop-a') : l.target, p)
      } catch {
        // a file of that name is already there
      }
    }
    if (e.blockDevice !== undefined) writeFileSync(join(dir, 'block-device-default.yaml'), e.blockDevice)
  }
}

// ---- block-device YAML -----------------------------------------------------------------------

const size = fc.constantFrom('1MiB', '16MiB', '40MiB', '200MiB', '512MiB', '100%', '50%', '2GiB', 'lots', 7, '0', '')
const fsType = fc.option(fc.constantFrom('ext4', 'ext3', 'ext2', 'xfs', 'vfat', 'btrfs', 'swap', 'zfs'))
const mountPoint = fc.constantFrom(
  '/',
  '/boot',
  '/boot/efi',
  '/srv/a[1]*',
  '/var',
  'relative',
  '/a b',
  '/x/../y',
  '/p|q',
)
const nodeName = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('root', 'boot', 'ESP', 'data', 'var', 'lv_root') },
  { weight: 1, arbitrary: fc.constantFrom('bad name', "a'b", '-x', '$(id)', '', 'é') },
)

const mkfsTree = fc.record(
  {
    type: fsType,
    label: fc.option(fc.constantFrom('lbl', 'a-very-long-label-indeed', 'EFI')),
    opts: fc.option(fc.constantFrom('-J size=64', '-O ^has_journal', '-F 16', '-M', '-b 4096 -J size=32')),
    mount: fc.option(
      fc.record({ mount_point: mountPoint, fstab: fc.option(fc.record({ options: fc.constant('defaults') })) }),
    ),
  },
  { requiredKeys: [] },
)

const partition = fc.record(
  {
    name: nodeName,
    size,
    flags: fc.option(fc.subarray(['boot', 'primary', 'fast'])),
    type: fc.option(fc.constantFrom('83', 'EF00', '8E00', 'zz', 0)),
    mkfs: fc.option(mkfsTree),
  },
  { requiredKeys: ['name', 'size'] },
)

const oneFs = fc.record({ type: fsType, opts: fc.option(fc.constantFrom('-J size=64', '-J size=16', '')) }).map((m) => [
  {
    local_loop: {
      name: 'image0',
      mkfs: { name: 'mkfs_root', ...dropNull(m), mount: { mount_point: '/', fstab: { options: 'defaults' } } },
    },
  },
])

const parted = fc
  .record({
    label: fc.constantFrom('mbr', 'gpt', 'gpt', 'apm'),
    partitions: fc.array(partition, { minLength: 1, maxLength: 4 }),
    root: fc.boolean(),
  })
  .map(({ label, partitions, root }) => [
    { local_loop: { name: 'image0' } },
    {
      partitioning: {
        base: 'image0',
        label,
        partitions: [
          ...partitions.map(dropNull),
          ...(root ? [{ name: 'rootp', size: '100%', mkfs: { name: 'mkfs_root', mount: { mount_point: '/' } } }] : []),
        ],
      },
    },
  ])

// LVM on the disk
const lvm = fc
  .record({ lvSize: fc.constantFrom('100M', '320M', '1G', '9G', 'x'), type: fsType, thin: fc.boolean() })
  .map(({ lvSize, type, thin }) => [
    { local_loop: { name: 'image0' } },
    {
      lvm: {
        name: 'lvm',
        pvs: [{ name: 'pv', base: 'image0' }],
        vgs: [{ name: 'vg', base: ['pv'] }],
        lvs: thin
          ? [
              { name: 'pool', base: 'vg', type: 'thin-pool', size: '64M' },
              { name: 'lv_root', base: 'vg', 'thin-pool': 'pool', size: lvSize },
            ]
          : [{ name: 'lv_root', base: 'vg', size: lvSize }],
      },
    },
    { mkfs: { name: 'mkfs_root', base: 'lv_root', ...(type ? { type } : {}), mount: { mount_point: '/' } } },
  ])

/** A valid-looking layout with one value somewhere inside replaced by anything (type confusion). */
const mutated = fc
  .tuple(fc.oneof(oneFs, parted, lvm), fc.nat(), fc.jsonValue({ maxDepth: 2 }))
  .map(([doc, at, value]) => {
    const copy = JSON.parse(JSON.stringify(doc)) as unknown
    const slots: [Record<string, unknown> | unknown[], string | number][] = []
    const walk = (v: unknown) => {
      if (Array.isArray(v)) v.forEach((x, i) => (slots.push([v, i]), walk(x)))
      else if (v !== null && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          slots.push([v as Record<string, unknown>, k])
          walk(x)
        }
      }
    }
    walk(copy)
    const [holder, key] = slots[at % slots.length]!
    ;(holder as Record<string | number, unknown>)[key] = value
    return copy
  })

const layoutDoc = fc.oneof(
  { weight: 3, arbitrary: oneFs },
  { weight: 3, arbitrary: parted },
  { weight: 2, arbitrary: lvm },
  { weight: 2, arbitrary: mutated },
  // anything at all, for the parser
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
)

function dropNull<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null)) as Partial<T>
}

const yamlText = fc.oneof(
  { weight: 6, arbitrary: layoutDoc.map((d) => stringify(d)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.constantFrom('- local_loop: [', ': :', '- {a: 1, b: 2}', '- mkfs: 3', '!!binary x') },
)

// ---- options ---------------------------------------------------------------------------------

const MiB = 1024 ** 2
const FORMATS: OutputFormatName[] = ['qcow2', 'raw', 'tar', 'tgz', 'squashfs', 'vhd', 'docker']

const inputsWithoutRequest = fc.record({
  elements: fc.dictionary(
    fc.constantFrom(...NAMES),
    elementGen(fc.oneof({ weight: 8, arbitrary: none }, { weight: 1, arbitrary: yamlText })),
    {
      minKeys: 1,
      maxKeys: 4,
    },
  ),
  osProvider: mostly(fc.constant(true), fc.constant(false)),
  config: fc.oneof({ weight: 3, arbitrary: none }, { weight: 1, arbitrary: yamlText }),
  size: mostly(
    fc.constantFrom(160 * MiB, 512 * MiB, 1024 * MiB, 5 * 1024 * MiB),
    fc.constantFrom(16 * MiB, 64 * MiB, 0, -1, 1.5, Number.NaN, 2 ** 60),
  ),
  fsType: mostly(fc.constantFrom(undefined, 'ext4', 'xfs', 'ext3', 'btrfs'), fc.constantFrom('ntfs', 'vfat', 'ext2')),
  rootLabel: mostly(fc.constantFrom(undefined, 'root', 'r00t-fs'), fc.string({ maxLength: 20 })),
  mkfsOptions: mostly(
    fc.constantFrom(undefined, `-O "^has_journal" -E 'a b'`, '-J size=16', '-m 0', '-L $(id)'),
    fc.constantFrom("-E 'x", '\\'),
  ),
  arch: mostly(fc.constantFrom(undefined, 'amd64', 'arm64', 'ppc64le', 'x86_64'), fc.constantFrom('../x', '')),
  formats: mostly(
    fc.option(
      fc.subarray(
        FORMATS.filter((f) => f !== 'docker'),
        { minLength: 1, maxLength: 3 },
      ),
      { nil: undefined },
    ),
    fc.constantFrom([], ['docker'] as OutputFormatName[]),
  ),
  envvars: fc.array(
    fc.record({
      name: fc.constantFrom('DIB_RELEASE', 'FOO', 'DIB_X'),
      value: fc.option(fc.string(), { nil: undefined }),
    }),
    { maxLength: 2 },
  ),
  hostDib: fc.dictionary(fc.constantFrom('DIB_A', 'DIB_B-C', 'DIB_Q'), fc.string({ maxLength: 8 }), { maxKeys: 2 }),
  excludeElements: mostly(fc.constant<string[]>([]), fc.subarray([...NAMES], { maxLength: 1 })),
  excludeScripts: fc.subarray(FILE_NAMES, { maxLength: 2 }),
  memsize: mostly(fc.constantFrom(undefined, 512, 2048), fc.constantFrom(100, 1.5)),
  smp: mostly(fc.constantFrom(undefined, 1, 2), fc.constantFrom(0, 300)),
  name: mostly(fc.constantFrom('img', 'sub-img'), fc.constantFrom('', 'dir/', 'nodir/img')),
  ramdisk: mostly(fc.constant(false), fc.constant(true)),
  skipBase: mostly(fc.constant(true), fc.constant(false)),
})

// The elements named on the command line: mostly ones that exist, now and then one that does not.
const inputs = inputsWithoutRequest.chain((i) => {
  const names = Object.keys(i.elements)
  // Dependencies on elements that exist (and, now and then, on one that does not).
  const elements = Object.fromEntries(
    Object.entries(i.elements).map(([n, e]) => [
      n,
      { ...e, deps: e.deps.filter((d) => d === 'missing' || (names.includes(d) && d !== n)) },
    ]),
  )
  return mostly(
    fc.subarray(names, { minLength: 1, maxLength: Math.min(3, names.length) }),
    fc.constant<string[]>(['missing']),
  ).map((requested) => ({ ...i, elements, requested }))
})

describe('planBuild over generated inputs', () => {
  it('returns a plan or throws a VirtDibError, and plans at least a third of the inputs', () => {
    let run = 0
    let planned = 0
    const failures = new Map<string, number>()
    fc.assert(
      fc.property(inputs, (i) => {
        const dir = join(tmp, `r${run++}`)
        const elPath = join(dir, 'elements')
        mkdirSync(elPath, { recursive: true })
        try {
          // The first requested element can be made an operating system, as most builds have one.
          const els = { ...i.elements }
          const first = i.requested[0]!
          if (i.osProvider && els[first as (typeof NAMES)[number]]) {
            const e = els[first as (typeof NAMES)[number]]!
            els[first as (typeof NAMES)[number]] = { ...e, provides: [...new Set([...e.provides, 'operating-system'])] }
          }
          writeElements(elPath, els)
          const opts: BuildOptions = {
            elements: i.requested,
            libPath: DIB_LIB,
            elementPaths: [elPath],
            skipBase: i.skipBase,
            ramdisk: i.ramdisk,
            name: i.name === '' || i.name.endsWith('/') ? i.name : join(dir, i.name),
            python: 'python3',
            size: i.size,
            env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir, ...i.hostDib },
            envvars: [
              ...i.envvars,
              ...(i.config !== undefined ? [{ name: 'DIB_BLOCK_DEVICE_CONFIG', value: i.config }] : []),
            ],
            excludeElements: i.excludeElements,
            excludeScripts: i.excludeScripts,
            ...(i.fsType !== undefined ? { fsType: i.fsType } : {}),
            ...(i.rootLabel !== undefined ? { rootLabel: i.rootLabel } : {}),
            ...(i.mkfsOptions !== undefined ? { mkfsOptions: i.mkfsOptions } : {}),
            ...(i.arch !== undefined ? { arch: i.arch } : {}),
            ...(i.formats !== undefined ? { formats: i.formats } : {}),
            ...(i.memsize !== undefined ? { memsize: i.memsize } : {}),
            ...(i.smp !== undefined ? { smp: i.smp } : {}),
          }
          try {
            const plan = planBuild(opts)
            // A map or a list where text belongs is refused, never turned into text (`mutated`).
            expect(JSON.stringify(plan.layout)).not.toContain('[object Object]')
            planned++
          } catch (e) {
            if (!(e instanceof VirtDibError)) throw e
            expect(e.message.split('\n').length, e.message).toBe(1)
            expect(e.message).not.toContain('[object Object]')
            const kind = e.message
              .replace(/‘[^’]*’/g, '‘…’')
              .replace(/^block-device config \([^)]*\)/, 'block-device config (…)')
              .slice(0, 70)
            failures.set(kind, (failures.get(kind) ?? 0) + 1)
          }
        } finally {
          rmSync(dir, { recursive: true, force: true })
        }
      }),
      // VDIB_PROPERTY_SEED / _RUNS explore further by hand; the suite always runs the fixed ones.
      {
        seed: Number(process.env['VDIB_PROPERTY_SEED'] ?? 20261201),
        numRuns: Number(process.env['VDIB_PROPERTY_RUNS'] ?? 300),
        endOnFailure: true,
      },
    )
    // Shows what the run explored when it is run with --reporter=verbose.
    console.log(
      `planned ${planned} of ${run}; refusals:`,
      Object.fromEntries([...failures].sort((a, b) => b[1] - a[1])),
    )
    expect(planned).toBeGreaterThanOrEqual(Math.ceil(run / 3))
  }, 120_000)
})
