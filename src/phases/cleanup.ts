// Runs outside the chroot with $NAME.d as working directory; side outputs go there.
import type { Phase } from './types.js'

export const cleanup: Phase = {
  hook: 'cleanup.d',
  where: 'appliance',
  cwd: 'out',
  seesTargetRoot: true,
  afterBlockDevice: true,
  seesImageSize: true,
}
