// Runs on the host against a FUSE view of the image, in virt-dib's working directory; files under
// TMP_HOOKS_PATH reach the guest.
import type { Phase } from './types.js'

export const extraData: Phase = {
  hook: 'extra-data.d',
  where: 'host',
  cwd: 'caller',
  seesTargetRoot: false,
  afterBlockDevice: false,
  seesImageSize: false,
}
