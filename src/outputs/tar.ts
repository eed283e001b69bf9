// tar: the image root's archive itself (xattrs kept; /proc and /sys contents excluded), which the
// guest's tar writes straight into the staged output; the engine cuts it to the archive's length.
import { defineFormat } from './types.js'

export const tar = defineFormat({
  name: 'tar',
  extension: 'tar',
  source: 'archive',
  isArchive: true,
  progress: () => 'Compressing the image as tar',
})
