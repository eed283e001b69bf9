// vhd: with vhd-util when the host has it (as the original); otherwise qemu-img's vpc driver,
// which also writes a valid dynamic VHD.
import { mkdtemp, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'

import { PrerequisiteError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { defineFormat } from './types.js'

export const vhd = defineFormat({
  name: 'vhd',
  extension: 'vhd',
  source: 'disk',
  progress: () => 'Converting to VHD',
  checkHost() {
    if (!findExecutable('vhd-util') && !findExecutable('qemu-img')) {
      throw new PrerequisiteError('vhd-util needed but not found', { hint: 'or install qemu-img (qemu-utils)' })
    }
  },
  async fromDisk(ctx, disk, target) {
    if (findExecutable('vhd-util')) {
      const tmp = await mkdtemp(join(dirname(target), '.vhd-'))
      try {
        const mid = join(tmp, 'intermediate')
        await runTool('vhd-util', ['convert', '-s', '0', '-t', '1', '-i', disk, '-o', mid], { signal: ctx.signal })
        await runTool('vhd-util', ['convert', '-s', '1', '-t', '2', '-i', mid, '-o', target], { signal: ctx.signal })
      } finally {
        await rm(tmp, { recursive: true, force: true })
      }
      return
    }
    // prettier-ignore
    await runTool('qemu-img', ['convert', '-U', '-f', 'raw', disk, '-O', 'vpc', '-o', 'subformat=dynamic', target], { signal: ctx.signal })
  },
})
