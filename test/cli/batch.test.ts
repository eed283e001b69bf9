// `virt-dib batch` before any appliance: its flags, a batch file with a typo, an unknown element
// in the second build (refused at planning, before the first launch), --dry-run, -j. The
// hypervisor is a script that leaves a marker if anything runs it.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, runCli, runCliAsync } from '../helpers/cli.js'
import { TempTree } from '../helpers/element-tree.js'
import { markerHypervisor } from '../helpers/sandbox.js'

const tree = new TempTree()
const els = tree.elements('els', {
  os: {
    provides: ['operating-system'],
    files: { 'root.d/10-root': '!#!/bin/sh\n', 'install.d/10-install': '!#!/bin/sh\n' },
  },
  extra: { deps: ['os'], files: { 'finalise.d/10-extra': '!#!/bin/sh\n' } },
})
const base = mkdtempSync(join(tmpdir(), 'vdib-batch-cli.'))
const hv = markerHypervisor(base)
afterAll(() => {
  tree.remove()
  rmSync(base, { recursive: true, force: true })
})

let n = 0
/** A folder with `batch.yaml` (`text`), its own TMPDIR, HOME and cache, and the marker's path. */
function place(text: string) {
  const dir = join(base, `case${n++}`)
  const tmp = join(dir, 'tmp')
  mkdirSync(tmp, { recursive: true })
  writeFileSync(join(dir, 'batch.yaml'), text)
  const marker = join(dir, 'launched')
  const env = {
    ...process.env,
    TMPDIR: tmp,
    HOME: join(dir, 'home'),
    XDG_CACHE_HOME: '',
    LIBGUESTFS_HV: hv,
    VDIB_TEST_MARKER: marker,
  }
  const run = (...args: string[]) => runCliAsync(['batch', ...args], { cwd: dir, env })
  return { dir, tmp, marker, run, file: join(dir, 'batch.yaml') }
}

const defaults = `defaults:
  libPath: ${DIB_LIB}
  elementPaths: [${els}]
  skipBase: true
  python: /usr/bin/python3
`

describe('virt-dib batch', () => {
  it('--help says how to use it; the main --help names the verb', () => {
    const r = runCli(['batch', '--help'])
    expect(r.status).toBe(0)
    expect(r.stdout).toContain(' virt-dib batch FILE [-j N] [--fail-fast] [--cache-dir DIR] [--dry-run]')
    for (const o of ['-j, --jobs N', '--fail-fast', '--cache-dir DIR', '--dry-run', '--machine-readable[=FORMAT]']) {
      expect(r.stdout).toContain(`  ${o}`)
    }
    expect(runCli(['--help']).stdout).toContain(' virt-dib batch FILE [-j N]')
  })

  it('a typo in a build: which build and which key, every problem at once, exit 1, nothing created', async () => {
    const c = place(`${defaults}builds:
  - name: one
    elements: [os]
  - name: two
    elements: [os]
    fromats: [qcow2]
  - name: three
    elements: [os]
    size: lots
`)
    const r = await c.run('batch.yaml')
    expect(r.status).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toBe(
      [
        'virt-dib: error: batch.yaml: builds[1].fromats: unknown key (did you mean formats?)',
        'virt-dib: error: batch.yaml: builds[2].size: not a size: lots',
        '',
      ].join('\n'),
    )
    expect(existsSync(c.marker)).toBe(false)
    expect(readdirSync(c.dir).sort()).toEqual(['batch.yaml', 'tmp'])
    expect(readdirSync(c.tmp)).toEqual([])
  })

  it('a file that cannot be read, or none given', async () => {
    const c = place('')
    const r = await c.run('nope.yaml')
    expect(r).toMatchObject({ status: 1, stdout: '' })
    expect(r.stderr).toBe('virt-dib: error: nope.yaml: cannot read the batch file: ENOENT\n')
    const none = await c.run()
    expect(none.status).toBe(1)
    expect(none.stderr).toBe(
      'virt-dib: batch needs a batch file: virt-dib batch FILE\nTry ‘virt-dib batch --help’ or consult virt-dib(1) for more information.\n',
    )
    const two = await c.run('a.yaml', 'b.yaml')
    expect(two.stderr).toMatch(/^virt-dib: batch takes one file, not 2: a\.yaml b\.yaml\n/)
  })

  it('an unknown element in the second build is refused at planning, before the first launch', async () => {
    const c = place(`${defaults}builds:
  - name: good
    elements: [os]
  - name: bad
    elements: [os, no-such-element]
`)
    const t0 = Date.now()
    const r = await c.run('-j', '2', 'batch.yaml')
    expect(Date.now() - t0).toBeLessThan(30_000)
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/^virt-dib: error: .*‘bad’.*no-such-element/m)
    expect(r.stderr).not.toMatch(/^\s+at |internal error|libguestfs error/m)
    expect(r.stdout).not.toMatch(/Running:|Opening the disks/)
    expect(existsSync(c.marker), 'an appliance launch was attempted').toBe(false)
    expect(readdirSync(c.dir).filter((f) => !['batch.yaml', 'tmp', 'home'].includes(f))).toEqual([])
  })

  it('--dry-run prints every build and what it shares, and runs nothing', async () => {
    const c = place(`${defaults}builds:
  - name: small
    elements: [os]
    size: 1G
  - name: big
    elements: [os]
    size: 2G
  - name: layer
    base: small
    elements: [extra]
`)
    const cache = join(c.dir, 'cache')
    const r = await c.run('--dry-run', '--cache-dir', cache, 'batch.yaml')
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    for (const name of ['small', 'big', 'layer']) expect(r.stdout).toContain(name)
    // The second build has the first's tree phases; the layer starts from its base.
    expect(r.stdout).toMatch(/shared with ‘small’/)
    expect(r.stdout).toMatch(/from base ‘small’/)
    expect(existsSync(c.marker)).toBe(false)
    expect(readdirSync(c.dir).filter((f) => !['batch.yaml', 'tmp', 'home', 'cache'].includes(f))).toEqual([])
  })

  it('-j takes a whole number of builds, 1 or more; unknown options are refused', async () => {
    const c = place(`${defaults}builds:\n  - name: one\n    elements: [os]\n`)
    for (const [args, line] of [
      [['-j', '0', 'batch.yaml'], 'virt-dib: error: -j ‘0’ is not a number of builds (1 or more)'],
      [['-j', 'two', 'batch.yaml'], 'virt-dib: error: -j ‘two’ is not a number of builds (1 or more)'],
      [['--jobs=-1', 'batch.yaml'], 'virt-dib: error: -j ‘-1’ is not a number of builds (1 or more)'],
      [['-j1.5', 'batch.yaml'], 'virt-dib: error: -j ‘1.5’ is not a number of builds (1 or more)'],
      [['batch.yaml', '-j'], "virt-dib: batch: option '--jobs' requires an argument"],
      [['--frobnicate', 'batch.yaml'], "virt-dib: batch: unrecognized option '--frobnicate'"],
      [['-q', '-v', 'batch.yaml'], 'virt-dib: error: batch: -q and -v contradict each other'],
      [['--cache-max-age', 'soon', 'batch.yaml'], 'virt-dib: error: --cache-max-age ‘soon’ is not a duration'],
    ] as const) {
      const r = await c.run(...args)
      expect(r.status, args.join(' ')).toBe(1)
      expect(r.stdout, args.join(' ')).toBe('')
      expect(r.stderr.split('\n')[0], args.join(' ')).toContain(line)
    }
    expect(existsSync(c.marker)).toBe(false)
  })

  it('a bad --machine-readable target is refused before the file is read', async () => {
    const c = place('not: [valid')
    const r = await c.run('--machine-readable=fd:99', 'batch.yaml')
    expect(r).toMatchObject({ status: 1, stdout: '' })
    expect(r.stderr).toBe('virt-dib: error: cannot use --machine-readable file descriptor 99: it is not open\n')
  })
})
