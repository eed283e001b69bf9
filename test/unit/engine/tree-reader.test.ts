// Which layouts the host reads itself for the tree outputs, and where their root starts on the disk.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { configToGraph, DEFAULT_CONFIG } from '../../../src/blockdev/config.js'
import { planLayout, type RootParams } from '../../../src/blockdev/layout.js'
import { layoutNotHostReadable, parseRootDevice } from '../../../src/engine/tree-reader.js'
import { root } from '../../helpers/cli.js'

const params = (o: Partial<RootParams> = {}): RootParams => ({
  diskSize: 5 * 1024 ** 3,
  fsType: 'ext4',
  rootLabel: undefined,
  mkfsOptions: undefined,
  rootFsUuid: 'root-uuid',
  ...o,
})
const layout = (yaml: string, o: Partial<RootParams> = {}) =>
  planLayout(configToGraph({ origin: 'test', yaml }), 'test', params(o))

const MBR_ONE = `
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 100%
        mkfs:
          mount:
            mount_point: /
`

describe('the host tree reader', () => {
  it('reads one ext2/3/4 file system at /, whole disk or partition', () => {
    expect(layoutNotHostReadable(layout(DEFAULT_CONFIG))).toBeUndefined()
    expect(layoutNotHostReadable(layout(MBR_ONE))).toBeUndefined()
    expect(layoutNotHostReadable(layout(MBR_ONE, { fsType: 'ext3' }))).toBeUndefined()
  })

  it('leaves other layouts to the guest, saying why', () => {
    expect(layoutNotHostReadable(layout(MBR_ONE, { fsType: 'xfs' }))).toBe('the root file system is xfs, not ext2/3/4')
    const lvm = readFileSync(join(root, 'test', 'fixtures', 'block-device', 'gpt-lvm-thin.yaml'), 'utf8')
    expect(layoutNotHostReadable(layout(lvm, { diskSize: 10 * 1024 ** 3 }))).toBe('the layout has LVM volumes')
    const two = `${MBR_ONE}      - name: data
        size: 100M
        mkfs:
          type: ext4
          mount:
            mount_point: /srv
`.replace('size: 100%', 'size: 1G')
    expect(layoutNotHostReadable(layout(two))).toBe('the tree spans 2 file systems')
  })

  it('finds the root’s offset on the output disk from what the guest says', () => {
    expect(parseRootDevice('part 2048 sda\n', '/dev/sda')).toEqual({ offset: 2048 * 512 })
    expect(parseRootDevice('disk 0 sda', '/dev/sda')).toEqual({ offset: 0 })
    expect(parseRootDevice('part 2048 sdb', '/dev/sda')).toEqual({
      reason: 'the root file system is on sdb, not on the output disk sda',
    })
    expect(parseRootDevice('findmnt: nothing', '/dev/sda')).toEqual({
      reason: 'the root device was not recognised (findmnt: nothing)',
    })
  })
})
