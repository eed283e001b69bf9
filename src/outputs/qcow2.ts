// qcow2: converted from the raw disk by qemu-img on the host (compressed unless -u).
import { PrerequisiteError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import type { OutputFormat } from './types.js'

export const qcow2: OutputFormat = {
  name: 'qcow2',
  extension: 'qcow2',
  source: 'disk',
  progress: () => 'Converting to qcow2',
  checkHost() {
    if (!findExecutable('qemu-img')) throw new PrerequisiteError('qemu-img needed but not found')
  },
  async fromDisk(ctx, disk, target) {
    const o = ctx.options
    // prettier-ignore
    await runTool('qemu-img', [
      // -U: the disk may still be open (read-only) in the appliance while this runs.
      'convert', '-U',
      ...(o.compress === false ? [] : ['-c']),
      '-f', 'raw', disk,
      '-O', 'qcow2',
      ...(o.qemuImgOptions ? ['-o', o.qemuImgOptions] : []),
      target,
    ], { signal: ctx.signal })
  },
}
