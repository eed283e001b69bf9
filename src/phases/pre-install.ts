// Runs in the image's chroot, before packages are installed.
import type { Phase } from './types.js'

export const preInstall: Phase = {
  hook: 'pre-install.d',
  where: 'chroot',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: false,
  seesImageSize: false,
}
