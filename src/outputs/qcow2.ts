// qcow2: converted from the raw disk by qemu-img on the host (compressed unless -u).
import { PrerequisiteError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { defineFormat } from './types.js'

/** qcow2's fields of BuildOptions. */
export interface Qcow2Options {
  /** qcow2: compress (default true; -u turns it off). */
  compress?: boolean
  /** qcow2: `-o` options of `qemu-img convert` (--qemu-img-options). */
  qemuImgOptions?: string
}

export interface Qcow2Settings {
  readonly compress: boolean
  readonly qemuImgOptions: string | undefined
}

export const qcow2 = defineFormat({
  name: 'qcow2',
  extension: 'qcow2',
  source: 'disk',
  resolveSettings: (o: Qcow2Options): Qcow2Settings => ({
    compress: o.compress !== false,
    qemuImgOptions: o.qemuImgOptions || undefined,
  }),
  flags: [
    { keys: ['-u'], help: 'Do not compress the qcow2 image', apply: (o) => void (o.compress = false) },
    {
      keys: ['--qemu-img-options'],
      arg: '<option>',
      help: 'Add qemu-img options',
      apply: (o, v) => void (o.qemuImgOptions = v),
    },
  ],
  progress: () => 'Converting to qcow2',
  checkHost() {
    if (!findExecutable('qemu-img')) throw new PrerequisiteError('qemu-img needed but not found')
  },
  async fromDisk(ctx, disk, target) {
    const s = ctx.settings
    // prettier-ignore
    await runTool('qemu-img', [
      // -U: the disk may still be open (read-only) in the appliance while this runs.
      'convert', '-U',
      ...(s.compress ? ['-c'] : []),
      '-f', 'raw', disk,
      '-O', 'qcow2',
      ...(s.qemuImgOptions !== undefined ? ['-o', s.qemuImgOptions] : []),
      target,
    ], { signal: ctx.signal })
  },
})
