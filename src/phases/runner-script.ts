// The phase runner (assets/run-phase.bash): one bash script that runs every script of one phase, in the appliance, in
// the image's chroot, or on the host. It reads a control file written by virt-dib (values are
// quoted data, never spliced into code), follows dib-run-parts' rules (names, executable bit,
// `LC_ALL=C sort -n`, environment.d sourced under `set -eu -o pipefail`), streams each output
// line live (to the serial console in the appliance, which reaches us as appliance events) and
// prints a summary on stdout that virt-dib reads when the call returns.
//
// Protocol: every line virt-dib reads starts with the build's random token:
//   TOKEN|L|start|NAME        live: a script starts
//   TOKEN|L|o|TEXT            live: one line of its output (stdout and stderr)
//   TOKEN|L|end|NAME|STATUS|MS
//   TOKEN|S|list|NAME NAME…   summary: the scripts of the phase, in order
//   TOKEN|S|env|FILE          summary: an environment file sourced
//   TOKEN|S|end|NAME|STATUS|MS
//   TOKEN|S|tail|TEXT         summary: last output lines of a failed script
//   TOKEN|S|var|NAME|VALUE    summary: IMAGE_BLOCK_DEVICE= lines seen in block-device.d
//   TOKEN|S|envfail|FILE|STATUS
//   TOKEN|S|done|STATUS
import { readFileSync } from 'node:fs'

const assets = new URL('../../assets/', import.meta.url)
const read = (name: string) => readFileSync(new URL(name, assets), 'utf8')

/** The runner script (bash). */
export const RUNNER_SCRIPT = read('run-phase.bash')
/** The fake sudo for phases outside the chroot: runs the command as the current user. */
export const FAKE_SUDO = read('fake-sudo')
/** `awk` is missing from the stock appliance (only gawk/mawk exist under their own names). */
export const FAKE_AWK = read('fake-awk')
