// The phase runner (assets/run-phase.bash): one bash script that runs every script of one phase, in the appliance, in
// the image's chroot, or on the host. It reads a control file written by virt-dib (values are
// quoted data, never spliced into code), follows dib-run-parts' rules (names, executable bit,
// `LC_ALL=C sort -n`, environment.d sourced under `set -eu -o pipefail`), streams each output
// line live (to the serial console in the appliance, which reaches us as appliance events) and
// prints a summary on stdout that virt-dib reads when the call returns.
// The lines it prints are described and parsed in protocol.ts.
import { readFileSync } from 'node:fs'

const assets = new URL('../../../assets/', import.meta.url)
const read = (name: string) => readFileSync(new URL(name, assets), 'utf8')

/** The runner script (bash). */
export const RUNNER_SCRIPT = read('run-phase.bash')
/** The fake sudo for phases outside the chroot: runs the command as the current user. */
export const FAKE_SUDO = read('fake-sudo')
/** `awk` is missing from the stock appliance (only gawk/mawk exist under their own names). */
export const FAKE_AWK = read('fake-awk')
