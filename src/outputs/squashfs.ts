// squashfs (xz): made by mksquashfs in the appliance, streamed to the host as it is written.
import { pipeline } from 'node:stream/promises'

import type { OutputFormat } from './types.js'

export const squashfs: OutputFormat = {
  name: 'squashfs',
  extension: 'squash',
  source: 'tree',
  progress: () => 'Compressing the image as squashfs',
  async fromTree(ctx, target) {
    const { stream, done } = ctx.g.mksquashfsStream(
      '/',
      { compress: 'xz', excludes: ['sys/*', 'proc/*', 'dev/*'] },
      { signal: ctx.signal },
    )
    const sink = ctx.fileSink(target)
    await Promise.all([pipeline(stream, sink), done])
    await sink.done
  },
}
