// The control file a runner sources: the phase's variables and the runner's own settings.
// Every value is single-quoted, so it reaches the script as data, whatever it contains.
import { shellQuote, type EnvVar } from '../../elements/environment.js'

export interface ControlOptions {
  hook: string
  /** The hooks tree as the runner sees it. */
  hooksDir: string
  token: string
  /** Where live lines go: the serial console in the appliance, stdout on the host. */
  console: string
  /** Append-only log of all script output (on the helper drive), or '' for none. */
  log: string
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
    `VDIB_TOKEN=${shellQuote(o.token)}`,
    `VDIB_CONSOLE=${shellQuote(o.console)}`,
    `VDIB_LOG=${shellQuote(o.log)}`,
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
