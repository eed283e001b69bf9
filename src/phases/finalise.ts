// Runs in the chroot of the final layout (boot loaders, relabelling).
import type { Phase } from './types.js'

export const finalise: Phase = {
  hook: 'finalise.d',
  where: 'chroot',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: true,
  seesImageSize: true,
}
