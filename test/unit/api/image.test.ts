import { describe, expect, it } from 'vitest'

import { mkfsCommand } from '../../../src/api/image.js'

describe('mkfs command', () => {
  it('uses diskimage-builder ext4 defaults and passes --mkfs-options word by word, literally', () => {
    expect(mkfsCommand('ext4', '/dev/sda', undefined, 'cloudimg-rootfs', 'u-1')).toBe(
      `'mkfs' '-t' 'ext4' '-F' '-i' '4096' '-J' 'size=64' '-L' 'cloudimg-rootfs' '-U' 'u-1' '/dev/sda'`,
    )
    expect(mkfsCommand('xfs', '/dev/sda', '-K $(reboot)', "it's", 'u-2')).toBe(
      `'mkfs' '-t' 'xfs' '-f' '-L' 'it'\\''s' '-m' 'uuid=u-2' '-K' '$(reboot)' '/dev/sda'`,
    )
  })
})
