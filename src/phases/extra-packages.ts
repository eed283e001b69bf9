// virt-dib's own step for --extra-packages, between pre-install.d and install.d: one generated
// script, run by the same runner in the chroot with install.d's environment (install-packages).
import { shellQuote } from '../util/shell-quote.js'
import { AUX_TREE } from '../elements/layout.js'
import { install } from './install.js'
import type { Phase } from './types.js'

/** Its name where a hook name goes (events, the control file run/extra-packages.ctl). */
export type ExtraPackagesHook = 'extra-packages'

export const extraPackages: Phase = {
  ...install,
  hook: 'extra-packages' satisfies ExtraPackagesHook,
  scriptsDir: `${AUX_TREE.runners}/extra-packages`,
}

/** The step runs only when packages were asked for. */
export function runsExtraPackages(packages: readonly string[]): boolean {
  return packages.length > 0
}

/** Its one script, relative to its scripts directory, and the script itself: one install-packages call. */
export function extraPackagesScript(packages: readonly string[]): { name: string; content: string } {
  return {
    name: '00-install-packages',
    content: `#!/bin/bash\nset -eu\ninstall-packages ${packages.map(shellQuote).join(' ')}\n`,
  }
}

/** The progress line before it runs. */
export function extraPackagesProgress(packages: readonly string[]): string {
  return `Installing: ${packages.join(' ')}`
}
