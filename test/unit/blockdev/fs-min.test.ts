// The file-system minimums of the plan against the real tools, on sparse files: at the minimum
// the plan accepts, mkfs must succeed (the plan never lets a failing mkfs through), and a little
// below it mkfs must fail (the plan is not stricter than the tool by more than ~3%).
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { configToGraph, DEFAULT_CONFIG } from '../../../src/blockdev/config.js'
import { checkFsFits, minFsSize } from '../../../src/blockdev/fs-min.js'
import { formatMiB, planLayout, type RootParams } from '../../../src/blockdev/layout.js'
import { BlockDeviceConfigError } from '../../../src/errors.js'

const KiB = 1024
const MiB = 1024 ** 2
const tmp = mkdtempSync(join(tmpdir(), 'vdib-fsmin.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0

function mkfsSucceeds(type: string, opts: string[], size: number): boolean {
  const img = join(tmp, `${type}.img`)
  writeFileSync(img, '')
  truncateSync(img, size)
  const force = /^ext/.test(type) ? ['-F', '-q'] : type === 'xfs' ? ['-f', '-q'] : type === 'btrfs' ? ['-f'] : []
  const r = spawnSync('mkfs', ['-t', type, ...force, ...opts, img], { stdio: 'ignore' })
  rmSync(img)
  return r.status === 0
}

const CASES: [string, string[], string][] = [
  // diskimage-builder's own options for an ext4 root
  ['ext4', ['-i', '4096', '-J', 'size=64'], 'mkfs.ext4'],
  ['ext4', ['-J', 'size=16', '-O', '^resize_inode'], 'mkfs.ext4'],
  ['ext4', ['-b', '4096', '-J', 'size=32'], 'mkfs.ext4'],
  ['ext3', ['-J', 'size=32'], 'mkfs.ext3'],
  ['ext3', ['-i', '1024', '-J', 'size=16'], 'mkfs.ext3'],
  ['ext2', ['-I', '128', '-J', 'size=16'], 'mkfs.ext2'],
  ['ext2', ['-O', 'flex_bg', '-J', 'size=64'], 'mkfs.ext2'],
  ['xfs', [], 'mkfs.xfs'],
  ['vfat', ['-F', '16'], 'mkfs.fat'],
  ['vfat', ['-F', '16', '-s', '16'], 'mkfs.fat'],
  ['btrfs', [], 'mkfs.btrfs'],
  ['btrfs', ['-M'], 'mkfs.btrfs'],
  ['btrfs', ['-m', 'single'], 'mkfs.btrfs'],
]

describe('file system minimums against mkfs', () => {
  for (const [type, opts, tool] of CASES) {
    it.skipIf(!has(tool))(`${type} ${opts.join(' ')}`, () => {
      const min = minFsSize(type, opts)!
      expect(min).toBeGreaterThan(0)
      expect(checkFsFits(type, opts, min)).toBeUndefined()
      expect(mkfsSucceeds(type, opts, min), 'mkfs fails at the size the plan accepts').toBe(true)
      const below = Math.floor((min * 0.97 - 64 * KiB) / (64 * KiB)) * 64 * KiB
      expect(checkFsFits(type, opts, below)).toBe(min)
      expect(mkfsSucceeds(type, opts, below), 'mkfs works well below the size the plan asks for').toBe(false)
    })
  }

  it('has no minimum where mkfs sizes things itself or the options are not understood', () => {
    expect(minFsSize('ext4', [])).toBeUndefined() // the journal is sized to fit
    expect(minFsSize('ext4', ['-O', '^has_journal'])).toBeUndefined()
    expect(minFsSize('ext2', [])).toBeUndefined()
    expect(minFsSize('vfat', [])).toBeUndefined()
    expect(minFsSize('vfat', ['-F', '32'])).toBeUndefined()
    // -J always makes a journal, even after -O ^has_journal (as mke2fs does)
    expect(minFsSize('ext4', ['-O', '^has_journal', '-J', 'size=64'])).toBeGreaterThan(128 * MiB)
    // an option the model does not follow: only the bound that holds whatever it does
    expect(checkFsFits('ext4', ['-g', '4096', '-J', 'size=64'], 129 * MiB)).toBeUndefined()
    expect(checkFsFits('ext4', ['-g', '4096', '-J', 'size=64'], 127 * MiB)).toBeDefined()
    expect(checkFsFits('ext4', ['--bogus'], 16 * MiB)).toBeUndefined()
  })

  it('needs no journal room below 2048 blocks (mke2fs makes none)', () => {
    expect(checkFsFits('ext4', ['-J', 'size=64'], 1 * MiB)).toBeUndefined()
    if (has('mkfs.ext4')) expect(mkfsSucceeds('ext4', ['-J', 'size=64'], 1 * MiB)).toBe(true)
  })
})

describe('the layout refuses file systems their devices cannot hold', () => {
  const params = (o: Partial<RootParams> = {}): RootParams => ({
    diskSize: 64 * MiB,
    fsType: 'ext4',
    rootLabel: undefined,
    mkfsOptions: undefined,
    rootFsUuid: 'u',
    ...o,
  })
  const plan = (yaml: string, origin: string, o: Partial<RootParams> = {}) =>
    planLayout(configToGraph({ origin, yaml }), origin, params(o))

  it('names the file system, what it needs, its device and --size (the default layout)', () => {
    expect(() => plan(DEFAULT_CONFIG, 'default')).toThrow(BlockDeviceConfigError)
    expect(() => plan(DEFAULT_CONFIG, 'default')).toThrow(
      /^the ext4 file system ‘mkfs_root’ needs at least 130\.4M but its disk is 64M \(--size 64M\)$/,
    )
    try {
      plan(DEFAULT_CONFIG, 'default')
    } catch (e) {
      expect((e as BlockDeviceConfigError).hint).toBe('give it more room: a larger --size')
    }
    expect(() => plan(DEFAULT_CONFIG, 'default', { diskSize: 131 * MiB })).not.toThrow()
    // --mkfs-options can make the journal smaller: then 64M is enough
    expect(() => plan(DEFAULT_CONFIG, 'default', { mkfsOptions: '-J size=16' })).not.toThrow()
    expect(() => plan(DEFAULT_CONFIG, 'default', { fsType: 'xfs', diskSize: 256 * MiB })).toThrow(
      /the xfs file system ‘mkfs_root’ needs at least 300M but its disk is 256M \(--size 256M\)/,
    )
    expect(() => plan(DEFAULT_CONFIG, 'default', { fsType: 'ext3' })).not.toThrow()
  })

  it('checks partitions and logical volumes at their own sizes', () => {
    const parts = `
- local_loop: { name: image0 }
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: boot
        size: 40MiB
        mkfs: { type: ext4, opts: "-J size=32", mount: { mount_point: /boot } }
      - name: root
        size: 100%
        mkfs: { name: mkfs_root, mount: { mount_point: / } }
`
    expect(() => plan(parts, 'layout.yaml', { diskSize: 512 * MiB })).toThrow(
      /^block-device config \(layout\.yaml\): the ext4 file system ‘mkfs_boot’ needs at least 6\d\.\dM but its partition ‘boot’ is 40M \(--size 512M\)$/,
    )
    expect(() => plan(parts.replace('40MiB', '66MiB'), 'layout.yaml', { diskSize: 512 * MiB })).not.toThrow()
    const lvm = `
- local_loop: { name: image0 }
- lvm:
    name: lvm
    pvs: [ { name: pv, base: image0 } ]
    vgs: [ { name: vg, base: [pv] } ]
    lvs:
      - { name: lv_root, base: vg, size: 200M }
      - { name: lv_thin_pool, base: vg, type: thin-pool, size: 64M }
      - { name: lv_srv, base: vg, thin-pool: lv_thin_pool, size: 320M }
- mkfs: { name: mkfs_root, base: lv_root, type: xfs, mount: { mount_point: / } }
- mkfs: { name: fs_srv, base: lv_srv, type: xfs, mount: { mount_point: /srv } }
`
    expect(() => plan(lvm, 'lvm.yaml', { diskSize: 1024 * MiB })).toThrow(
      /the xfs file system ‘mkfs_root’ needs at least 300M but its logical volume ‘lv_root’ is 200M/,
    )
    // a thin volume is as big as its virtual size (320M on a 64M pool is enough for xfs)
    expect(() => plan(lvm.replace('size: 200M', 'size: 300M'), 'lvm.yaml', { diskSize: 1024 * MiB })).not.toThrow()
  })

  it('formats sizes for messages', () => {
    expect(formatMiB(64 * MiB, 'down')).toBe('64M')
    expect(formatMiB(64 * MiB + 1, 'up')).toBe('64.1M')
    expect(formatMiB(64 * MiB + 1, 'down')).toBe('64M')
  })
})

// The real tool agrees with the message's number for diskimage-builder's ext4 root.
it.skipIf(!has('mkfs.ext4'))('the 64M disk of the default layout really is too small for mke2fs', () => {
  const r = (() => {
    const img = join(tmp, 'r.img')
    writeFileSync(img, '')
    truncateSync(img, 64 * MiB)
    try {
      execFileSync('mkfs', ['-t', 'ext4', '-F', '-q', '-i', '4096', '-J', 'size=64', img], { stdio: 'pipe' })
      return ''
    } catch (e) {
      return String((e as { stderr: Buffer }).stderr)
    }
  })()
  expect(r).toMatch(/Total journal size too big for filesystem/)
})
