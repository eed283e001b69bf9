// The merged hooks tree: what is merged, what collides, what is skipped, and why.
import { execFileSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { resolveElements } from '../../../src/elements/deps.js'
import { loadElementIndex } from '../../../src/elements/discover.js'
import { listEnvironmentFiles, listPhaseScripts, planHooksTree, prepareHooksTree } from '../../../src/elements/hooks.js'
import { ElementError } from '../../../src/errors.js'
import { TempTree } from '../../helpers/element-tree.js'

describe('hooks tree', () => {
  const tree = new TempTree()
  afterAll(() => tree.remove())
  const path = tree.elements('e', {
    os: {
      provides: ['operating-system'],
      files: {
        'root.d/10-root': '!#!/bin/sh\n',
        'install.d/20-b': '!#!/bin/sh\n',
        'install.d/05-a': '!#!/bin/sh\n',
        'install.d/30-data.conf': 'data\n',
        'install.d/40-noexec': '#!/bin/sh\n',
        'install.d/01-sahara-version': '!#!/bin/sh\n',
        'environment.d/10-os.bash': 'export A=1\n',
        'static/etc/motd': 'from os\n',
        'tests/test_x.py': 'x\n',
        'README.rst': 'os\n',
        'pkg-map': '{"os": 1}\n',
      },
    },
    other: {
      files: {
        'install.d/10-other': '!#!/bin/sh\n',
        'install.d/excluded-one': '!#!/bin/sh\n',
        'environment.d/5-other.bash': 'export B=2\n',
        'static/etc/motd': 'from other\n',
        'README.rst': 'other\n',
        'bin/tool': '!#!/bin/sh\n',
      },
      links: { 'install.d/15-linked': '../bin/tool', 'install.d/16-dangling': '/nonexistent/target' },
    },
    clash: { files: { 'install.d/20-b': '!#!/bin/sh\n' } },
    clashenv: { files: { 'environment.d/10-os.bash': 'x\n' } },
  })
  const index = loadElementIndex([path])
  const els = (...n: string[]) => resolveElements(index, { skipBase: true, elements: n }).elements

  it('merges subdirectories and lists scripts in run order across elements', () => {
    const plan = planHooksTree(els('os', 'other'), ['excluded-one'])
    const { scripts, skipped } = listPhaseScripts(plan, 'install.d')
    expect(scripts.map((s) => `${s.name}@${s.element}`)).toEqual([
      '05-a@os',
      '10-other@other',
      '15-linked@other',
      '20-b@os',
    ])
    expect(skipped.sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { name: '01-sahara-version', element: 'os', reason: 'excluded' },
      { name: '16-dangling', element: 'other', reason: 'not-a-file' },
      { name: '30-data.conf', element: 'os', reason: 'bad-name' },
      { name: '40-noexec', element: 'os', reason: 'not-executable' },
      { name: 'excluded-one', element: 'other', reason: 'excluded' },
    ])
  })

  it('reports a duplicated hook naming both elements', () => {
    expect(() => planHooksTree(els('os', 'clash'))).toThrow(
      'there is a duplicated hook in your elements: install.d/20-b in ‘clash’ and ‘os’',
    )
    // environment.d is a subdirectory like any other
    expect(() => planHooksTree(els('os', 'clashenv'))).toThrow(/environment\.d\/10-os\.bash/)
  })

  it('overwrites deeper files and top-level files silently (later element wins), skips tests/', () => {
    const plan = planHooksTree(els('os', 'other'))
    const motd = plan.files.find((f) => f.path === 'static/etc/motd')
    expect(motd?.element).toBe('other')
    expect(plan.files.find((f) => f.path === 'README.rst')?.element).toBe('other')
    expect(plan.files.find((f) => f.path === 'pkg-map')?.element).toBe('os')
    expect(plan.files.some((f) => f.path.startsWith('tests/'))).toBe(false)
  })

  it('writes the tree with modes kept and symlinks followed', () => {
    const plan = planHooksTree(els('os', 'other'))
    const out = tree.path('hooks')
    prepareHooksTree(plan, out)
    expect(statSync(`${out}/install.d/05-a`).mode & 0o777).toBe(0o755)
    expect(statSync(`${out}/install.d/30-data.conf`).mode & 0o777).toBe(0o644)
    expect(lstatSync(`${out}/install.d/15-linked`).isFile()).toBe(true)
    expect(lstatSync(`${out}/install.d/16-dangling`).isSymbolicLink()).toBe(true)
    expect(readFileSync(`${out}/static/etc/motd`, 'utf8')).toBe('from other\n')
    expect(existsSync(`${out}/tests`)).toBe(false)
  })

  it('lists environment.d files in byte order', () => {
    const plan = planHooksTree(els('os', 'other'))
    expect(listEnvironmentFiles(plan).map((f) => f.name)).toEqual(['10-os.bash', '5-other.bash'])
  })
})

describe('symbolic links in elements', () => {
  const tree = new TempTree()
  afterAll(() => tree.remove())
  const outside = tree.path('outside')
  mkdirSync(join(outside, 'lib'), { recursive: true })
  writeFileSync(join(outside, 'tool'), '#!/bin/sh\necho outside\n', { mode: 0o755 })
  writeFileSync(join(outside, 'lib', 'data'), 'outside data\n')
  let lastElement = ''
  const plan = (
    links: Record<string, string>,
    files: Record<string, string> = { 'install.d/00-ok': '!#!/bin/sh\n' },
  ) => {
    const dir = `e${Math.random().toString(36).slice(2)}`
    const path = tree.elements(dir, { el: { provides: ['operating-system'], files, links } })
    lastElement = join(path, 'el')
    const index = loadElementIndex([path])
    return () => planHooksTree(resolveElements(index, { elements: ['el'], skipBase: true }).elements)
  }

  it('refuses a link to its own directory, naming the element and the path', () => {
    expect(plan({ 'install.d/x': '.' })).toThrow(ElementError)
    expect(plan({ 'install.d/x': '.' })).toThrow(
      /^element ‘el’: ‘install\.d\/x’ is a symbolic link loop \(-> \.\): it leads back to a directory it is in$/,
    )
  })

  it('refuses links to a parent, to /, a cycle through two directories, and a chain of links', () => {
    expect(plan({ 'install.d/up': '..' })).toThrow(/‘install\.d\/up’ is a symbolic link loop \(-> \.\.\)/)
    expect(plan({ 'static/root': '/' })).toThrow(/‘static\/root’ is a symbolic link loop \(-> \/\)/)
    expect(
      plan({ 'static/a/to-b': '../b', 'static/b/to-a': '../a' }, { 'static/a/f': 'x', 'static/b/g': 'y' }),
    ).toThrow(/‘static\/(a\/to-b\/to-a|b\/to-a\/to-b)’ is a symbolic link loop/)
    expect(plan({ 'install.d/p': 'q', 'install.d/q': 'p' })).toThrow(
      /‘install\.d\/p’ is a symbolic link loop \(-> q\)$/,
    )
    // a hook directory that is itself a link back into the element
    expect(plan({ 'install.d': '.' }, {})).toThrow(/‘install\.d’ is a symbolic link loop/)
  })

  it('follows links that point outside the element: the tree gets the content (as cp -L would)', () => {
    const p = plan({ 'install.d/10-tool': join(outside, 'tool'), 'static/lib': join(outside, 'lib') })()
    const inHookDirs = p.files.filter((f) => f.path.includes('/'))
    expect(inHookDirs.map((f) => [f.path, f.dangling])).toEqual([
      ['install.d/00-ok', false],
      ['install.d/10-tool', false],
      ['static/lib/data', false],
    ])
    const out = tree.path('out-followed')
    prepareHooksTree(p, out)
    expect(lstatSync(join(out, 'install.d/10-tool')).isFile()).toBe(true)
    expect(statSync(join(out, 'install.d/10-tool')).mode & 0o777).toBe(0o755)
    expect(readFileSync(join(out, 'static/lib/data'), 'utf8')).toBe('outside data\n')
  })

  it('keeps a dangling link as a link; the phase skips it as not a file', () => {
    const p = plan({ 'install.d/20-gone': '/nonexistent/x', 'install.d/30-rel': '../nowhere/y' })()
    const out = tree.path('out-dangling')
    prepareHooksTree(p, out)
    expect(lstatSync(join(out, 'install.d/20-gone')).isSymbolicLink()).toBe(true)
    expect(listPhaseScripts(p, 'install.d').skipped.map((s) => [s.name, s.reason])).toEqual([
      ['20-gone', 'not-a-file'],
      ['30-rel', 'not-a-file'],
    ])
  })

  it('refuses a FIFO (copying it would hang) rather than failing later', () => {
    const make = plan({})
    execFileSync('mkfifo', [join(lastElement, 'install.d', 'fifo')])
    expect(make).toThrow(/^element ‘el’: ‘install\.d\/fifo’ is not a file, a directory or a symbolic link$/)
  })
})
