// The dib-block-device stand-in, run with bash on the host against the files virt-dib writes.
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { configToGraph } from '../../../src/blockdev/config.js'
import { createdValues, planValues } from '../../../src/blockdev/devices.js'
import { DIB_BLOCK_DEVICE_SCRIPT, getvalFiles, paramsYaml } from '../../../src/blockdev/getval.js'
import { planLayout } from '../../../src/blockdev/layout.js'

const tmp = mkdtempSync(join(tmpdir(), 'vdib-getval.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const layout = planLayout(
  configToGraph({
    origin: 't',
    yaml: `
- local_loop: {name: image0}
- partitioning:
    base: image0
    label: mbr
    partitions:
      - {name: boot, flags: [boot, primary], size: 100MiB, mkfs: {type: ext4, label: img-boot, mount: {mount_point: /boot}}}
      - {name: root, flags: [primary], size: 100%, mkfs: {name: mkfs_root, mount: {mount_point: /}}}
`,
  }),
  't',
  { diskSize: 2 * 1024 ** 3, fsType: 'ext4', rootLabel: undefined, mkfsOptions: undefined, rootFsUuid: 'u' },
)

function install(withCreated: boolean): string {
  const aux = mkdtempSync(join(tmp, 'aux.'))
  mkdirSync(join(aux, 'fake-bin'))
  const script = join(aux, 'fake-bin', 'dib-block-device')
  writeFileSync(script, DIB_BLOCK_DEVICE_SCRIPT)
  chmodSync(script, 0o755)
  const files = [...getvalFiles(planValues(layout), 'plan')]
  if (withCreated) files.push(...getvalFiles(createdValues(layout, '/dev/sda', '/out/img.raw'), 'created'))
  for (const [p, c] of files) {
    mkdirSync(join(aux, 'blockdev', p, '..'), { recursive: true })
    writeFileSync(join(aux, 'blockdev', p), c)
  }
  return script
}

describe('dib-block-device getval', () => {
  it('answers what the layout says before it is created, and refuses the rest', () => {
    const bin = install(false)
    const get = (s: string) => execFileSync(bin, ['getval', s], { encoding: 'utf8' })
    expect(get('root-label')).toBe('cloudimg-rootfs\n')
    expect(get('root-fstype')).toBe('ext4\n')
    expect(get('mount-points')).toBe('/boot|/\n')
    expect(get('boot-label')).toBe('img-boot\n')
    const early = spawnSync(bin, ['getval', 'image-block-device'], { encoding: 'utf8' })
    expect([early.status, early.stderr]).toEqual([
      1,
      'dib-block-device: image-block-device is not known before the block device is created\n',
    ])
    const bad = spawnSync(bin, ['--params', '/x.yaml', 'getval', 'nonsense'], { encoding: 'utf8' })
    expect([bad.status, bad.stderr]).toEqual([1, 'dib-block-device: invalid symbol [nonsense] for getval\n'])
    const evil = spawnSync(bin, ['getval', '../../etc/passwd'], { encoding: 'utf8' })
    expect(evil.status).toBe(1)
  })

  it('answers the devices once created, in the shape diskimage-builder prints', () => {
    const bin = install(true)
    const get = (s: string) => execFileSync(bin, ['getval', s], { encoding: 'utf8' })
    expect(get('image-block-device')).toBe('/dev/sda\n')
    expect(get('image-block-devices')).toBe(' [image0]=/dev/sda  [boot]=/dev/sda1  [root]=/dev/sda2 \n')
    expect(get('image-block-partition')).toBe('/dev/sda2\n')
    expect(get('image-path')).toBe('/out/img.raw\n')
  })

  it('writes params.yaml with the keys diskimage-builder has', () => {
    const y = paramsYaml(layout, {
      configPath: '/c.yaml',
      imageDir: '/i',
      buildDir: '/b',
      mountBase: '/sysroot',
      fsType: 'ext4',
      rootLabel: undefined,
      mkfsOptions: '-K',
    })
    expect(y).toBe(
      'config: /c.yaml\nimage-dir: /i\nroot-fs-type: ext4\nroot-label: ""\nmount-base: /sysroot\nbuild-dir: /b\nimage-size: 2097152KiB\nroot-fs-opts: -K\n',
    )
  })
})
