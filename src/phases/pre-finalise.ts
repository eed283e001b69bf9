// Runs outside the chroot on the final layout (the original virt-dib skipped it).
import type { Phase } from './types.js'

export const preFinalise: Phase = {
  hook: 'pre-finalise.d',
  where: 'appliance',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: true,
  seesImageSize: true,
}
