// What a program embedding virt-dib calls when it must stop at once (the CLI's second Ctrl-C):
// the builds were already aborted through their AbortSignal, and their cleanup may be slow.
import { killAllAppliances } from '../guestfs/index.js'
import { hurryCleanups } from '../util/cleanup.js'

/** How long a hurried cleanup may take before it is abandoned (the workspace still goes). */
export const HURRY_CLEANUP_MS = 3500

/**
 * Stops every build of this process now, synchronously: SIGKILLs every appliance (no qemu is
 * left whatever happens next), and bounds every cleanup, running or to come, to `graceMs`
 * (an undo still running then is abandoned, the older ones such as removing the workspace still
 * run). Abort the builds first (their AbortSignal); this does not. Returns the appliances killed.
 */
export function stopBuildsNow(graceMs: number = HURRY_CLEANUP_MS): number {
  const killed = killAllAppliances()
  hurryCleanups(graceMs)
  return killed
}
