// Runs in the image's chroot.
import type { Phase } from './types.js'

export const install: Phase = {
  hook: 'install.d',
  where: 'chroot',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: false,
  seesImageSize: false,
}
