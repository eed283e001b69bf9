// What the steps of a build give each other: one typed field per result, written once by the
// step that gives it (the step table declares who gives and who needs what).
import type { BlockDeviceLayout } from '../blockdev/layout.js'

export interface BuildState {
  /** prepare-aux: the aux tree on the host, packed into the aux drive. */
  auxDir: string
  /** appliance: the output disk file on the host (a staged name in the output directory for raw). */
  disk: string
  /** appliance: the export drive's file, where the guest writes archives (the staged tar output, if asked). */
  exportDrive: string
  /** build-root: the output disk as the appliance kernel names it (/dev/sda). */
  outDevice: string
  /** block-device.d: the device a script named with IMAGE_BLOCK_DEVICE=, if one did. */
  namedDevice: string | undefined
  /** block-device: the layout carried out (the planned one, or the override for a named device). */
  layout: BlockDeviceLayout
  /** extract-data: `<name>.d` if elements left files there. */
  extraDataDir: string | undefined
  /** tree-archive: the length of the image root's archive at the start of the export drive. */
  archiveBytes: number
}
