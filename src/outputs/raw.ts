// raw: the finished disk itself. The appliance writes it under a staged name in the output
// directory (engine/appliance.ts), and the commit renames it into place: nothing to convert.
import { defineFormat } from './types.js'

export const raw = defineFormat({
  name: 'raw',
  extension: 'raw',
  source: 'disk',
  isRawDisk: true,
  progress: () => 'Writing the raw image',
})
