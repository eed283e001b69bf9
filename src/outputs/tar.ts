// tar: the image root as a tarball (xattrs kept; /proc and /sys contents excluded).
import { defineFormat } from './types.js'

export const tar = defineFormat({
  name: 'tar',
  extension: 'tar',
  source: 'tar-stream',
  progress: () => 'Compressing the image as tar',
  consumeTar: (ctx, target) => ctx.fileSink(target!),
})
