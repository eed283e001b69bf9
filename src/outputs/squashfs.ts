// squashfs (xz): made by mksquashfs in the appliance, streamed to the host as it is written.
import { pumpGuestStream } from './stream.js'
import { defineFormat } from './types.js'

export const squashfs = defineFormat({
  name: 'squashfs',
  extension: 'squash',
  source: 'tree',
  progress: () => 'Compressing the image as squashfs',
  async fromTree(ctx, target) {
    // A failing write cancels mksquashfs in the guest at once (the appliance stays usable).
    const stop = new AbortController()
    const sink = ctx.fileSink(target)
    const guest = ctx.g.mksquashfsStream(
      '/',
      { compress: 'xz', excludes: ['sys/*', 'proc/*', 'dev/*'] },
      { signal: AbortSignal.any([ctx.signal, stop.signal]) },
    )
    await pumpGuestStream(guest, [sink], stop)
  },
})
