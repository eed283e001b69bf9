// --dry-run on Debian's real elements, checked against diskimage-builder's own resolver.
import { spawnSync } from 'node:child_process'

import { describe, expect, it } from 'vitest'

import type { DryRunReport } from '../../src/api/dry-run.js'
import { DIB_PHASE_ORDER } from '../helpers/phases.js'
import { DIB_ELEMENTS, DIB_LIB, runCli } from '../helpers/cli.js'

/** diskimage-builder's element_dependencies on the same request (it prepends base itself: we do too). */
function dibElements(elements: string[]): string[] {
  const code = `import sys\nfrom diskimage_builder import element_dependencies as d\nprint(' '.join(sorted(e for e, _ in d.get_elements(sys.argv[1:], ${JSON.stringify(DIB_ELEMENTS)}))))`
  const r = spawnSync('/usr/bin/python3', ['-c', code, ...elements], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(r.stderr)
  return r.stdout.trim().split(' ')
}

function ours(args: string[]): DryRunReport {
  const r = runCli(['-B', DIB_LIB, '-p', DIB_ELEMENTS, '--dry-run=json', ...args])
  if (r.status !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout) as DryRunReport
}

describe('--dry-run on the elements Debian ships', () => {
  for (const req of [
    ['debian-minimal', 'vm'],
    ['ubuntu', 'vm', 'dhcp-all-interfaces'],
    ['debian-minimal', 'vm', 'block-device-gpt', 'growroot', 'cloud-init-datasources', 'devuser'],
  ]) {
    it(`expands ${req.join(' ')} to the same set as diskimage-builder`, () => {
      const report = ours(req)
      // diskimage-builder's driver adds base and, for vm, block-device-mbr before resolving.
      const dibReq = [
        'base',
        ...req,
        ...(req.includes('vm') && !req.some((e) => e.startsWith('block-device-')) ? ['block-device-mbr'] : []),
      ]
      expect(report.elements.map((e) => e.name)).toEqual(dibElements(dibReq))
    })
  }

  it('says whether the tree is built in place: vm (block-device-mbr, one root) yes, block-device-efi no', () => {
    expect(ours(['debian-minimal', 'vm']).blockDevice.buildInPlace).toBe(true)
    // The EFI system partition is FAT, mounted at /boot/efi: built apart and copied on.
    expect(ours(['debian-minimal', 'vm', 'block-device-efi']).blockDevice.buildInPlace).toBe(false)
  })

  it('expands a ramdisk request like ramdisk-image-create', () => {
    const report = runCli(['-B', DIB_LIB, '-p', DIB_ELEMENTS, '--ramdisk', '--dry-run=json', 'debian-minimal'])
    expect(report.status).toBe(0)
    const r = JSON.parse(report.stdout) as DryRunReport
    expect(r.ramdisk).toBe(true)
    expect(r.elements.map((e) => e.name)).toEqual(dibElements(['ramdisk', 'base', 'debian-minimal']))
  })

  it('lists each phase with its scripts in run order, skipped files, and the environment', () => {
    const r = ours(['debian-minimal', 'vm'])
    const phase = (h: string) => r.phases.find((p) => p.hook === h)!
    expect(r.phases.map((p) => p.hook)).toEqual([...DIB_PHASE_ORDER])
    expect(phase('root.d').scripts.map((s) => s.name)).toContain('08-debootstrap')
    expect(phase('finalise.d').scripts.map((s) => s.name)).toContain('50-bootloader')
    const install = phase('install.d').scripts.map((s) => s.name)
    const sorted = spawnSync('sort', ['-n'], {
      input: install.join('\n') + '\n',
      env: { LC_ALL: 'C' },
      encoding: 'utf8',
    }).stdout
    expect(install).toEqual(sorted.trim().split('\n'))
    expect(phase('install.d').where).toBe('chroot')
    expect(phase('root.d').environment.find((v) => v.name === 'TARGET_ROOT')?.value).toBe('/sysroot')
    expect(r.environmentFiles.length).toBeGreaterThan(0)
  })

  it('lists the steps in the order the build runs them (a ramdisk build stops at the shutdown)', () => {
    const vm = ours(['debian-minimal', 'vm', '--formats', 'qcow2,tar', '--checksum'])
    const names = vm.steps.map((s) => s.name)
    expect(names.slice(0, 5)).toEqual(['prepare-aux', 'appliance', 'aux-image', 'launch', 'build-root'])
    expect(names.filter((n) => n.endsWith('.d'))).toEqual([...DIB_PHASE_ORDER])
    expect(names.slice(-6)).toEqual(['freeze-image', 'tree-archive', 'shutdown', 'tar', 'qcow2', 'checksums'])
    expect(vm.steps.find((s) => s.name === 'qcow2')?.startsAfter).toBe('freeze-image')
    const text = runCli([
      '-B',
      DIB_LIB,
      '-p',
      DIB_ELEMENTS,
      '--dry-run',
      '--formats',
      'qcow2,tar',
      'debian-minimal',
      'vm',
    ])
    expect(text.stdout).toContain('\nSteps, in order:\n  prepare-aux\n  appliance\n')
    expect(text.stdout).toContain('  qcow2  (starts after freeze-image, runs beside the steps between)\n')
    const ramdisk = JSON.parse(
      runCli(['-B', DIB_LIB, '-p', DIB_ELEMENTS, '--ramdisk', '--dry-run=json', 'debian-minimal']).stdout,
    ) as DryRunReport
    expect(ramdisk.steps.at(-1)?.name).toBe('shutdown')
  })

  it('takes the --dry-run value only with =, so an element named after it still works', () => {
    const r = runCli(['-B', DIB_LIB, '-p', DIB_ELEMENTS, '--dry-run', 'debian-minimal'])
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/^Elements:\n/)
    expect(r.stdout).toMatch(/debian-minimal/)
  })
})
