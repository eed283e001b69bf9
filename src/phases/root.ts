// Builds the root tree outside the chroot (TARGET_ROOT is the image root).
import type { Phase } from './types.js'

export const root: Phase = {
  hook: 'root.d',
  where: 'appliance',
  cwd: '/',
  seesTargetRoot: true,
  afterBlockDevice: false,
  seesImageSize: false,
}
