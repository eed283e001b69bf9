// The merged hooks tree: what is merged, what collides, what is skipped, and why.
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs'

import { afterAll, describe, expect, it } from 'vitest'

import { resolveElements } from '../../../src/elements/deps.js'
import { loadElementIndex } from '../../../src/elements/discover.js'
import { listEnvironmentFiles, listPhaseScripts, planHooksTree, prepareHooksTree } from '../../../src/elements/hooks.js'
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
