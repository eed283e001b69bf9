import { describe, expect, it } from 'vitest'

import { mkfsCommand } from '../../../src/api/image.js'

describe('mkfs command', () => {
  it('uses diskimage-builder ext4 defaults and passes --mkfs-options word by word, literally', () => {
    expect(mkfsCommand('ext4', '/dev/sda', undefined)).toBe(`'mkfs' '-t' 'ext4' '-F' '-i' '4096' '-J' 'size=64' '/dev/sda'`)
    expect(mkfsCommand('xfs', '/dev/sda', '-m crc=1 $(reboot)')).toBe(`'mkfs' '-t' 'xfs' '-f' '-m' 'crc=1' '$(reboot)' '/dev/sda'`)
  })
})
