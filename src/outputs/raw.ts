// raw: the finished disk itself, renamed into place (it was created in the output directory).
import { pipeline } from 'node:stream/promises'
import { createReadStream } from 'node:fs'

import { defineFormat } from './types.js'

export const raw = defineFormat({
  name: 'raw',
  extension: 'raw',
  source: 'disk',
  isRawDisk: true,
  progress: () => 'Writing the raw image',
  async fromDisk(ctx, disk, target) {
    // Only used when the disk could not be renamed (e.g. ramdisk builds): copy it.
    const sink = ctx.fileSink(target)
    await pipeline(createReadStream(disk), sink)
    await sink.done
  },
})
