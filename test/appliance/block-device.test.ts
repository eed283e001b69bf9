// A partitioned build: GPT with an EFI system partition, a BIOS boot partition, /boot and LVM
// (plain and thin volumes), from DIB_BLOCK_DEVICE_CONFIG. One build, checked from the outside
// (sgdisk, qemu-img), from inside the build (a probe element), and by a second appliance.
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { build, type BuildEvent } from '../../src/index.js'
import { createHandle } from '../helpers/appliance.js'
import { qemuDescendants, waitFor } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

const root = resolve(import.meta.dirname, '..', '..')
const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
const layoutFile = join(root, 'test', 'fixtures', 'block-device', 'gpt-lvm-thin.yaml')
const MiB = 1024 ** 2

describe('partitioned image: gpt + efi + /boot + lvm with a thin volume', () => {
  const out = tempDir('vdib-bd.')
  const tmp = tempDir('vdib-bdtmp.')
  const name = join(out, 'img')
  const probe = (f: string) => readFileSync(join(`${name}.d`, f), 'utf8')
  const events: BuildEvent[] = []

  beforeAll(async () => {
    await build(
      {
        elements: ['demo-os', 'demo-app', 'layout-probe'],
        libPath: LIB,
        elementPaths: [join(root, 'examples', 'elements'), join(root, 'test', 'fixtures', 'elements')],
        skipBase: true,
        size: 1024 * MiB,
        formats: ['raw', 'tar'],
        name,
        envvars: [{ name: 'DIB_BLOCK_DEVICE_CONFIG', value: `file://${layoutFile}` }],
        env: { ...process.env, TMPDIR: tmp },
      },
      { onEvent: (e) => events.push(e) },
    )
  }, 20 * 60_000)

  afterAll(() => {
    rmSync(out, { recursive: true, force: true })
    rmSync(tmp, { recursive: true, force: true })
  })

  it('writes the GPT the layout asks for: sizes, type codes and names (sgdisk -p on the raw file)', () => {
    const p = execFileSync('sgdisk', ['-p', `${name}.raw`], { encoding: 'utf8' })
    const rows = p
      .split('\n')
      .filter((l) => /^\s+\d+\s/.test(l))
      .map((l) => l.trim().split(/\s+/))
    expect(rows.map((r) => [r[0], r[1], r.at(-2), r.at(-1)])).toEqual([
      ['1', '2048', 'EF00', 'ESP'],
      ['2', String(2048 + 32 * 2048), 'EF02', 'BSP'],
      ['3', String(2048 + 33 * 2048), '8300', 'boot'],
      ['4', String(2048 + 129 * 2048), '8E00', 'root'],
    ])
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', `${name}.raw`], { encoding: 'utf8' }))
    expect(info['virtual-size']).toBe(1024 * MiB)
  })

  it('answers getval before the layout exists, and refuses what is not known yet', () => {
    expect(probe('getval-root.d')).toBe(
      'root-label=img-rootfs\nroot-fstype=xfs\nmount-points=/boot/efi|/boot|/|/var|/srv\nboot-label=img-boot\n',
    )
    expect(probe('getval-early.err')).toMatch(/image-block-device is not known before the block device is created/)
    expect(probe('layout-root.d.env')).toBe(
      [
        'DIB_BLOCK_DEVICE_PARAMS_YAML=/sysroot/tmp/in_target.aux/blockdev/params.yaml',
        'DIB_BOOT_LABEL=img-boot',
        'DIB_MOUNTPOINTS=/boot/efi|/boot|/|/var|/srv',
        'DIB_ROOT_FSTYPE=xfs',
        'DIB_ROOT_LABEL=img-rootfs',
        '',
      ].join('\n'),
    )
    expect(probe('params.yaml')).toMatch(/^root-fs-type: ext4$/m)
    expect(probe('params.yaml')).toMatch(/^image-size: 1048576KiB$/m)
  })

  /**
   * The kernel name the build's appliance gave the output disk: the order in which the kernel names
   * drives is not fixed (sd probes asynchronously), and virt-dib finds the disk by its label.
   */
  const builtOn = (): string => {
    const m = /^image-block-device=(\/dev\/sd[a-z]+)$/m.exec(probe('getval-pre-finalise.d'))
    expect(m, 'the build recorded its block device').not.toBeNull()
    return m![1]!
  }

  it('gives later phases the devices, and mounts every file system in place before pre-finalise.d', () => {
    const d = builtOn()
    const devices = ` [image0]=${d}  [ESP]=${d}1  [BSP]=${d}2  [boot]=${d}3  [root]=${d}4 `
    const lvs =
      ' [lv_root]=/dev/mapper/vg--image-lv_root  [lv_var]=/dev/mapper/vg--image-lv_var  [lv_srv]=/dev/mapper/vg--image-lv_srv '
    expect(probe('getval-pre-finalise.d')).toBe(
      [
        'root-label=img-rootfs',
        'root-fstype=xfs',
        'mount-points=/boot/efi|/boot|/|/var|/srv',
        `image-block-device=${d}`,
        `image-block-devices=${devices}${lvs}`,
        `image-block-partition=${d}4`,
        '',
      ].join('\n'),
    )
    expect(probe('layout-pre-finalise.d.env')).toBe(`IMAGE_BLOCK_DEVICE=${d}\nIMAGE_BLOCK_DEVICES=${devices}${lvs}\n`)
    expect(probe('mounts').trim().split('\n')).toEqual([
      '/sysroot /dev/mapper/vg--image-lv_root xfs',
      `/sysroot/boot ${d}3 ext4`,
      `/sysroot/boot/efi ${d}1 vfat`,
      '/sysroot/srv /dev/mapper/vg--image-lv_srv ext4',
      '/sysroot/var /dev/mapper/vg--image-lv_var ext4',
    ])
  })

  it('leaves the tree archive to the guest: the host reads only one ext file system at /', () => {
    const said = events.flatMap((e) => (e.kind === 'debug' ? [e.text] : []))
    expect(said).toContain('the guest archives the image tree: the layout has LVM volumes')
  })

  it('writes fstab in mount order with labels, and tars the whole tree across the file systems', () => {
    expect(execFileSync('tar', ['-xOf', `${name}.tar`, './etc/fstab'], { encoding: 'utf8' })).toBe(
      [
        'LABEL=img-rootfs / xfs defaults 0 1',
        'LABEL=img-boot /boot ext4 defaults 0 2',
        'LABEL=fs_var /var ext4 defaults 0 2',
        'LABEL=EFI /boot/efi vfat umask=0077 0 2',
        '',
      ].join('\n'),
    )
    const list = execFileSync('tar', ['-tf', `${name}.tar`], { encoding: 'utf8' })
    expect(list).toMatch(/^\.\/var\/log\/demo-root\.log$/m)
    expect(list).toMatch(/^\.\/etc\/layout-devices$/m)
  })

  it('leaves no temp dir and no qemu behind', async () => {
    expect(readdirSync(tmp).filter((d) => d.startsWith('dib.'))).toEqual([])
    expect(await waitFor(() => qemuDescendants().length === 0, 10_000)).toBe(true)
  })

  it('reads back in a second appliance: volumes, labels, UUIDs, and each tree on its file system', async () => {
    const g = await createHandle()
    try {
      await g.addDrive(`${name}.raw`, { format: 'raw', readonly: true })
      await g.launch()
      expect(await g.lvs()).toEqual(
        expect.arrayContaining(['/dev/vg-image/lv_root', '/dev/vg-image/lv_srv', '/dev/vg-image/lv_var']),
      )
      const fs = await g.listFilesystems()
      expect(fs).toMatchObject({
        '/dev/sda1': 'vfat',
        '/dev/sda3': 'ext4',
        '/dev/vg-image/lv_root': 'xfs',
        '/dev/vg-image/lv_var': 'ext4',
        '/dev/vg-image/lv_srv': 'ext4',
      })
      expect(await g.vfsLabel('/dev/sda1')).toBe('EFI')
      expect(await g.vfsLabel('/dev/sda3')).toBe('img-boot')
      expect(await g.vfsLabel('/dev/vg-image/lv_root')).toBe('img-rootfs')
      expect(await g.vfsUuid('/dev/vg-image/lv_srv')).toBe('6a0c3b52-5d3e-4b8e-9f5e-0d5a3c1e2f70')
      // Each file system on its own, as the boot would mount it.
      await g.mountRo('/dev/vg-image/lv_var', '/')
      expect(await g.ls('/')).toEqual(['lib', 'log', 'lost+found'])
      expect(await g.isFile('/log/demo-root.log')).toBe(true)
      await g.umountAll()
      await g.mountRo('/dev/vg-image/lv_root', '/')
      for (const [dev, mp] of [
        ['/dev/sda3', '/boot'],
        ['/dev/sda1', '/boot/efi'],
        ['/dev/vg-image/lv_var', '/var'],
        ['/dev/vg-image/lv_srv', '/srv'],
      ] as const) {
        await g.mountRo(dev, mp)
      }
      expect(await g.sh('/usr/local/bin/hello')).toMatch(/^hello from the virt-dib demo image/)
      // What the build's scripts recorded: the names the build's appliance gave the disk.
      const d = builtOn()
      expect(await g.cat('/etc/layout-devices')).toBe(
        [
          `BSP=${d}2`,
          `ESP=${d}1`,
          `boot=${d}3`,
          `image0=${d}`,
          'lv_root=/dev/mapper/vg--image-lv_root',
          'lv_srv=/dev/mapper/vg--image-lv_srv',
          'lv_var=/dev/mapper/vg--image-lv_var',
          `root=${d}4`,
          '',
        ].join('\n'),
      )
      expect((await g.cat('/etc/demo-built')).endsWith(` on ${d}\n`)).toBe(true)
    } finally {
      await g.close()
    }
  })
})
