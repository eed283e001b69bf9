// Runs outside the chroot; may print IMAGE_BLOCK_DEVICE= to choose the device.
import type { Phase } from './types.js'

export const blockDevice: Phase = {
  hook: 'block-device.d',
  where: 'appliance',
  cwd: '/',
  seesTargetRoot: false,
  afterBlockDevice: false,
  seesImageSize: true,
}
