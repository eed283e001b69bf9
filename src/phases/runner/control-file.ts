// The control file a runner sources: the phase's variables and the runner's own settings.
// Every value is single-quoted, so it reaches the script as data, whatever it contains.
import type { EnvVar } from '../../elements/environment.js'
import { shellQuote } from '../../util/shell-quote.js'

export interface ControlOptions {
  hook: string
  /** The hooks tree as the runner sees it. */
  hooksDir: string
  /**
   * The nonce of the protocol lines and the log file. virt-dib passes both as the runner's
   * arguments instead, so that control files are the same from one build to the next; a control
   * file may still carry them (the runner's arguments win).
   */
  token?: string
  /** Where live lines go: the serial console in the appliance, stdout on the host. */
  console: string
  /** Append-only log of all script output (on the helper drive), or '' for none. */
  log?: string
  cwd: string
  exclude: readonly string[]
  trace: boolean
  /** A file sourced after this one if it exists (variables known only later, e.g. the block device). */
  extraEnv: string
  vars: readonly EnvVar[]
  /** What get_image_element_array prints: `[name]=path ...`. */
  elementArray: string
  /** Scripts directory when it is not `<hooksDir>/<hook>` (the extra-packages step). */
  scriptsDir?: string
  where: 'host' | 'appliance' | 'chroot'
}

export function formatControlFile(o: ControlOptions): string {
  const lines = [
    `# virt-dib control file for ${o.hook.replace(/[^\w.-]/g, '_')}`,
    ...o.vars.map((v) => `export ${v.name}=${shellQuote(v.value)}`),
    `VDIB_HOOK=${shellQuote(o.hook)}`,
    `VDIB_HOOKS_DIR=${shellQuote(o.hooksDir)}`,
    ...(o.token !== undefined ? [`VDIB_TOKEN=${shellQuote(o.token)}`] : []),
    `VDIB_CONSOLE=${shellQuote(o.console)}`,
    ...(o.log !== undefined ? [`VDIB_LOG=${shellQuote(o.log)}`] : []),
    `VDIB_CWD=${shellQuote(o.cwd)}`,
    `VDIB_EXCLUDE=${shellQuote(o.exclude.join(' '))}`,
    `VDIB_TRACE=${o.trace ? 1 : 0}`,
    `VDIB_WHERE=${o.where}`,
    `VDIB_EXTRA_ENV=${shellQuote(o.extraEnv)}`,
    `VDIB_SCRIPTS_DIR=${shellQuote(o.scriptsDir ?? `${o.hooksDir}/${o.hook}`)}`,
    `VDIB_ENV_DIR=${shellQuote(`${o.hooksDir}/environment.d`)}`,
    `get_image_element_array() { printf '%s\\n' ${shellQuote(o.elementArray)}; }`,
    '',
  ]
  return lines.join('\n')
}

/** `export NAME='value'` lines for variables learnt during the build (sourced after the control file). */
export function formatExtraEnv(vars: readonly { name: string; value: string }[]): string {
  return vars.map((v) => `export ${v.name}=${shellQuote(v.value)}`).join('\n') + '\n'
}
