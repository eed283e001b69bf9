// Runs in the image's chroot, after install.d.
import type { Phase } from './types.js'

export const postInstall: Phase = {
  hook: 'post-install.d',
  where: 'chroot',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: false,
  seesImageSize: false,
}
