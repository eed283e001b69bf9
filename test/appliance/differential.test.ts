// Differential test: the same elements built by diskimage-builder's own disk-image-create
// (Debian's python3-diskimage-builder, as root with loop devices) and by virt-dib. For every
// phase: where it ran, the phase order, and the names of the variables scripts saw. Each
// difference is either fixed or listed here and in the README as intended.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { findExecutable } from '../../src/host/which.js'
import { build } from '../../src/index.js'
import { DIB_LIB, root } from '../helpers/cli.js'
import { DIB_PHASE_ORDER } from '../helpers/phases.js'

// block-device.d: diskimage-builder has no image root mounted there, so it records nothing.
const HOOKS = DIB_PHASE_ORDER.filter((h) => h !== 'block-device.d')
const elementsPath = [join(root, 'examples', 'elements'), join(root, 'test', 'fixtures', 'elements')]
const cleanEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LC_ALL: 'C' }

/** Intended differences, per context. `only-dib` / `only-ours`: variable names. */
const INTENDED = {
  // virt-dib's own variables (documented in its man page)
  ours: new Set(['DIB_IMAGE_ROOT_FS_UUID', 'DIB_MANIFEST_SAVE_DIR', 'IMAGE_BLOCK_DEVICE_WITHOUT_PART']),
  oursOutside: new Set(['TMPDIR']), // the image's /tmp: the appliance's /tmp is a small RAM disk
  // host state diskimage-builder leaks that has no meaning in an appliance
  dib: new Set(['OUT_IMAGE_PATH', 'PWD', 'SHLVL', 'OLDPWD', '_']),
  // --image-size (GB) is exported from the start; virt-dib has --size and exports KiB from block-device.d
  dibBeforeBlockDevice: new Set(['DIB_IMAGE_SIZE']),
  // sudo -E chroot leaks these into the chroot
  dibChroot: new Set([
    'DIB_PYTHON_EXEC',
    'LOGNAME',
    'USER',
    'SUDO_COMMAND',
    'SUDO_GID',
    'SUDO_UID',
    'SUDO_USER',
    'LANG',
    'MAIL',
    'SHELL',
    'TERM',
    'HOSTNAME',
    'USERNAME',
  ]),
}

function probe(tar: string, dir: string): Record<string, string> {
  execFileSync('tar', ['-C', dir, '-xf', tar, './var/lib/diff-probe'])
  const out: Record<string, string> = {}
  for (const f of ['order', ...HOOKS.flatMap((h) => [`${h}.vars`, `${h}.where`])]) {
    try {
      out[f] = readFileSync(join(dir, 'var/lib/diff-probe', f), 'utf8')
    } catch {
      out[f] = ''
    }
  }
  return out
}

// It needs diskimage-builder itself, run as root: elsewhere it shows as skipped, with the reason.
const skipReason = !findExecutable('disk-image-create')
  ? 'disk-image-create is not installed (Debian: python3-diskimage-builder)'
  : process.getuid?.() !== 0
    ? 'disk-image-create needs root (loop devices, mounts, chroot)'
    : ''

describe.skipIf(skipReason !== '')(
  `differential: disk-image-create vs virt-dib on the same elements${skipReason ? ` (skipped: ${skipReason})` : ''}`,
  () => {
    let work: string
    let dib: Record<string, string>
    let ours: Record<string, string>

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'vdib-diff.'))
      // prettier-ignore
      const r = spawnSync('disk-image-create', ['-n', '-t', 'tar', '--image-size', '1', '-o', join(work, 'dib'), 'demo-os', 'diff-probe'], {
      env: { ...cleanEnv, ELEMENTS_PATH: elementsPath.join(':') },
      encoding: 'utf8',
    })
      if (r.status !== 0) throw new Error(`disk-image-create failed:\n${r.stdout}\n${r.stderr}`)
      await build({
        elements: ['demo-os', 'diff-probe'],
        libPath: DIB_LIB,
        elementPaths: elementsPath,
        skipBase: true,
        size: 512 * 1024 ** 2,
        formats: ['tar'],
        name: join(work, 'ours'),
        env: cleanEnv,
      })
      execFileSync('mkdir', ['-p', join(work, 'x-dib'), join(work, 'x-ours')])
      dib = probe(join(work, 'dib.tar'), join(work, 'x-dib'))
      ours = probe(join(work, 'ours.tar'), join(work, 'x-ours'))
    }, 20 * 60_000)
    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true })
    })

    it('runs the phases in the same order (block-device.d: DIB has no image root mounted there)', () => {
      expect(ours['order']!.split('\n').filter((h) => h !== 'block-device.d')).toEqual(dib['order']!.split('\n'))
    })

    it('runs each phase in the same place (chroot or outside)', () => {
      for (const h of HOOKS) expect([h, ours[`${h}.where`]]).toEqual([h, dib[`${h}.where`]])
    })

    it('gives every phase the same variable names, but for the intended differences', () => {
      const report: string[] = []
      for (const h of HOOKS) {
        const chroot = dib[`${h}.where`]!.trim() === 'chroot'
        const d = new Set(dib[`${h}.vars`]!.split('\n').filter(Boolean))
        const o = new Set(ours[`${h}.vars`]!.split('\n').filter(Boolean))
        const early = HOOKS.indexOf(h) < HOOKS.indexOf('pre-finalise.d')
        const onlyDib = [...d].filter(
          (n) =>
            !o.has(n) &&
            !INTENDED.dib.has(n) &&
            !(chroot && INTENDED.dibChroot.has(n)) &&
            !(early && INTENDED.dibBeforeBlockDevice.has(n)),
        )
        const onlyOurs = [...o].filter(
          (n) => !d.has(n) && !INTENDED.ours.has(n) && !(!chroot && INTENDED.oursOutside.has(n)),
        )
        if (onlyDib.length || onlyOurs.length)
          report.push(`${h}: only DIB: ${onlyDib.join(' ')} | only virt-dib: ${onlyOurs.join(' ')}`)
      }
      expect(report).toEqual([])
    })
  },
)
