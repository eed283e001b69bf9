// Runs outside the chroot on the finished tree (the original virt-dib skipped it).
import type { Phase } from './types.js'

export const postRoot: Phase = {
  hook: 'post-root.d',
  where: 'appliance',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: false,
  seesImageSize: false,
}
