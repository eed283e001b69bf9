// The environment model: for every phase, the exact variables an element script sees and where
// each value comes from. The pipeline writes these (as data) for the runners; --dry-run prints
// them. Rules: diskimage-builder's variables and meanings; like the original virt-dib, the host
// environment never reaches the appliance phases except through --envvar (VAR carries the host
// value, VAR=VALUE sets it, the last one wins), and variables virt-dib sets win over --envvar.
import { UsageError } from '../errors.js'
import { shellQuote } from '../util/shell-quote.js'
import type { Where } from '../events.js'
import * as L from './layout.js'
import type { ResolvedElement } from './types.js'

export type HookName =
  | 'root.d'
  | 'extra-data.d'
  | 'pre-install.d'
  | 'install.d'
  | 'post-install.d'
  | 'post-root.d'
  | 'block-device.d'
  | 'pre-finalise.d'
  | 'finalise.d'
  | 'cleanup.d'

export type { Where }

export type EnvSource = 'virt-dib' | 'envvar' | 'host' | 'block-device'

export interface EnvVar {
  name: string
  value: string
  source: EnvSource
}

/** One --envvar: `VAR` (carry the host value) or `VAR=VALUE`. */
export interface EnvvarSpec {
  name: string
  value?: string
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/** Parses an --envvar argument; throws on a name the shell could not export. */
export function parseEnvvar(arg: string): EnvvarSpec {
  const eq = arg.indexOf('=')
  const name = eq === -1 ? arg : arg.slice(0, eq)
  if (!ENV_NAME.test(name)) throw new UsageError(`invalid variable name ‘${name}’ in --envvar`)
  return eq === -1 ? { name } : { name, value: arg.slice(eq + 1) }
}

/** The --envvar list after "last one wins"; carried names absent from the host are dropped. */
export function resolveEnvvars(specs: readonly EnvvarSpec[], hostEnv: NodeJS.ProcessEnv): EnvVar[] {
  const out = new Map<string, EnvVar>()
  for (const s of specs) {
    const value = s.value ?? hostEnv[s.name]
    out.delete(s.name) // keep the position of the last occurrence
    if (value !== undefined) out.set(s.name, { name: s.name, value, source: 'envvar' })
  }
  return [...out.values()]
}

export interface BlockDeviceVars {
  /** IMAGE_BLOCK_DEVICE: the whole disk (where a boot loader goes). */
  device: string
  /** IMAGE_BLOCK_DEVICES: ` [name]=device ` per block device, for bash `eval`. */
  devices?: string
}

/** What the block-device layout says before it exists (diskimage-builder's `getval` answers). */
export interface LayoutVars {
  rootLabel: string
  rootFsType: string
  /** DIB_MOUNTPOINTS: mount points separated by '|'. */
  mountPoints: string
  bootLabel?: string
}

export interface EnvInputs {
  arch: string
  imageName: string
  elements: readonly ResolvedElement[]
  /** argv as given (argv[0] first) for DIB_ARGS. */
  argv: readonly string[]
  hostEnv: NodeJS.ProcessEnv
  envvars: readonly EnvvarSpec[]
  offline: boolean
  debugTrace: number
  checksum: boolean
  /** From the block-device layout: DIB_ROOT_LABEL, DIB_ROOT_FSTYPE, DIB_MOUNTPOINTS, DIB_BOOT_LABEL. */
  layout: LayoutVars
  rootFsUuid: string
  /** SOURCE_DATE_EPOCH, exported to every phase when the build has one. */
  sourceDateEpoch?: number
  /** --fs-type (FS_TYPE); the root's actual type is layout.rootFsType. */
  fsType: string
  elementPaths: readonly string[]
  /** -B as given; host phases use it directly. */
  libPath: string
  /** --image-cache (host side, extra-data.d). */
  imageCache: string
  python: string
  /** Set once block-device.d ran / the layout exists. */
  blockDevice?: BlockDeviceVars
  skipBase?: boolean
  /** Output disk size in bytes (DIB_IMAGE_SIZE, in KiB, from block-device.d on). */
  size?: number
  /** Host paths for extra-data.d: where the image root is mounted (FUSE). */
  hostMount?: string
  /** Host directory of fake sudo and friends for extra-data.d. */
  hostFakeBin?: string
}

export { shellQuote }

/** DIB_ARGS: argv[0] as is, then every argument single-quoted. */
export function formatDibArgs(argv: readonly string[]): string {
  const [prog = 'virt-dib', ...rest] = argv
  return [prog, ...rest.map(shellQuote)].join(' ')
}

/**
 * DIB_ENV as modern diskimage-builder writes it (`export | grep ' DIB_.*='` under LC_ALL=C): one
 * `declare -x NAME=VALUE` line per host DIB_* variable bash would import, sorted by name, each
 * value quoted exactly as bash 5 prints it (see bashExportQuote).
 */
export function formatDibEnv(hostEnv: NodeJS.ProcessEnv): string {
  return Object.keys(hostEnv)
    .filter((k) => k.startsWith('DIB_') && ENV_NAME.test(k) && hostEnv[k] !== undefined)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((k) => `declare -x ${k}=${bashExportQuote(hostEnv[k]!)}`)
    .join('\n')
}

const ANSI_C_ESCAPES: Record<number, string> = {
  0x07: '\\a',
  0x08: '\\b',
  0x09: '\\t',
  0x0a: '\\n',
  0x0b: '\\v',
  0x0c: '\\f',
  0x0d: '\\r',
  0x1b: '\\E',
  0x27: "\\'",
  0x5c: '\\\\',
}

/**
 * A value as `declare -x` prints it in the C locale: "…" with $ ` " \ escaped when every byte
 * is printable ASCII, else $'…' with C escapes and every other byte (UTF-8 included) as \ooo.
 */
export function bashExportQuote(value: string): string {
  const bytes = Buffer.from(value, 'utf8')
  if (bytes.every((b) => b >= 0x20 && b < 0x7f)) return `"${value.replace(/[$`"\\]/g, (c) => `\\${c}`)}"`
  let out = "$'"
  for (const b of bytes) {
    const esc = ANSI_C_ESCAPES[b]
    if (esc !== undefined) out += esc
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b)
    else out += `\\${b.toString(8).padStart(3, '0')}`
  }
  return `${out}'`
}

/** IMAGE_ELEMENT_YAML: `name: path` per element, sorted (yaml.safe_dump sorts keys). */
export function formatElementYaml(elements: readonly ResolvedElement[]): string {
  return elements.map((e) => `${e.name}: ${e.dir}`).join('\n') + '\n'
}

/**
 * What the environment model needs to know of a phase; each src/phases/<hook>.ts states them (a
 * Phase is one), so that no list of hook names lives here.
 */
export interface PhaseFacts {
  where: Where
  /** TARGET_ROOT is set outside the chroot (diskimage-builder sets it for root.d and cleanup.d only). */
  seesTargetRoot: boolean
  /** Runs after block-device.d: IMAGE_BLOCK_DEVICE and friends exist. */
  afterBlockDevice: boolean
  /** DIB_IMAGE_SIZE is set (block-device.d and after). */
  seesImageSize: boolean
}

const CHROOT_PATH = `${L.HOOKS}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`
const APPLIANCE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * Every variable a script of `phase` sees, in the order they are exported, each with its source.
 * For host phases the caller merges this over the host environment.
 */
export function phaseEnvironment(inputs: EnvInputs, phase: PhaseFacts): { vars: EnvVar[]; warnings: string[] } {
  const where = phase.where
  const own = new Map<string, EnvVar>()
  const set = (name: string, value: string, source: EnvSource = 'virt-dib') => own.set(name, { name, value, source })
  // Inside the image, paths are what the chroot sees; outside, prefixed by /sysroot (or the FUSE mount).
  const at = (p: string) => L.seenFrom(where, p, inputs.hostMount ?? '')

  set('LC_ALL', 'C')
  set('ARCH', inputs.arch)
  set('IMAGE_NAME', inputs.imageName)
  set('IMAGE_ELEMENT', inputs.elements.map((e) => e.name).join(' '))
  set('DIB_ARGS', formatDibArgs(inputs.argv))
  set('DIB_ENV', formatDibEnv(inputs.hostEnv))
  set('DIB_OFFLINE', inputs.offline ? '1' : '')
  set('DIB_DEBUG_TRACE', String(inputs.debugTrace))
  set('DIB_CHECKSUM', inputs.checksum ? '1' : '0')
  set('DIB_ROOT_LABEL', inputs.layout.rootLabel)
  set('DIB_IMAGE_ROOT_FS_UUID', inputs.rootFsUuid)
  if (inputs.sourceDateEpoch !== undefined) set('SOURCE_DATE_EPOCH', String(inputs.sourceDateEpoch))
  set('FS_TYPE', inputs.fsType)
  set('DIB_NO_TMPFS', '1')
  set('DIB_MIN_TMPFS', '2')
  // compat: diskimage-builder exports its default, whatever -t asked for.
  set('IMAGE_TYPE', 'qcow2')
  if (inputs.skipBase) set('SKIP_BASE', '1')
  // diskimage-builder reads these from the block-device layout before root.d.
  set('DIB_ROOT_FSTYPE', inputs.layout.rootFsType)
  set('DIB_MOUNTPOINTS', inputs.layout.mountPoints)
  if (inputs.layout.bootLabel !== undefined) set('DIB_BOOT_LABEL', inputs.layout.bootLabel)
  // compat: diskimage-builder leaks these host values into every phase; element manifests use them.
  set('IMAGE_ELEMENT_YAML', formatElementYaml(inputs.elements))
  set('ELEMENTS_PATH', inputs.elementPaths.join(':'))

  if (where === 'host') {
    const mount = inputs.hostMount ?? ''
    set('TMP_MOUNT_PATH', mount)
    set('TMP_HOOKS_PATH', at(L.HOOKS))
    set('TMP_BUILD_DIR', at(L.AUX))
    set('TMP_IMAGE_DIR', at(L.AUX))
    set('_LIB', inputs.libPath)
    set('DIB_LOCKFILES', `${inputs.hostEnv['HOME'] ?? ''}/.cache/dib/lockfiles`)
    set('DIB_IMAGE_CACHE', inputs.imageCache)
    set('DIB_PYTHON_EXEC', inputs.python)
    set('DIB_MANIFEST_SAVE_DIR', `${at(L.outDir(inputs.imageName))}/`)
    set('DIB_BLOCK_DEVICE_PARAMS_YAML', at(L.BLOCKDEV_PARAMS))
    const hostPath = inputs.hostEnv['PATH'] ?? '/usr/bin:/bin'
    set('PATH', inputs.hostFakeBin ? `${inputs.hostFakeBin}:${hostPath}` : hostPath)
  } else {
    set('TMP_MOUNT_PATH', where === 'appliance' ? L.SYSROOT : '')
    set('TMP_HOOKS_PATH', at(L.HOOKS))
    set('TMP_BUILD_DIR', at(L.AUX))
    set('TMP_IMAGE_DIR', at(L.AUX))
    // divergence: outside the chroot TMPDIR is the image's /tmp (on the build disk), as the
    // appliance's own /tmp is a small RAM disk. In the chroot it is unset, as diskimage-builder does.
    if (where === 'appliance') set('TMPDIR', at('/tmp'))
    set('_LIB', at(L.LIB))
    set('DIB_LOCKFILES', `${at(L.PERM_HOME)}/.cache/dib/lockfiles`)
    set('DIB_IMAGE_CACHE', at(L.PERM_IMAGE_CACHE))
    set('DIB_MANIFEST_SAVE_DIR', `${at(L.outDir(inputs.imageName))}/`)
    set('DIB_BLOCK_DEVICE_PARAMS_YAML', at(L.BLOCKDEV_PARAMS))
    // The appliance has python3 (virt-dib's appliance); in the chroot it is the image's business.
    if (where === 'appliance') set('DIB_PYTHON_EXEC', '/usr/bin/python3')
    set('HOME', where === 'chroot' ? '/root' : at(L.PERM_HOME))
    set('PATH', where === 'chroot' ? CHROOT_PATH : `${at(L.FAKE_BIN)}:${at(L.HOOKS)}/bin:${APPLIANCE_PATH}`)
  }
  if (where !== 'chroot' && phase.seesTargetRoot) {
    set('TARGET_ROOT', where === 'host' ? (inputs.hostMount ?? '') : L.SYSROOT)
  }
  const bd = inputs.blockDevice
  if (bd && phase.afterBlockDevice) {
    set('IMAGE_BLOCK_DEVICE', bd.device, 'block-device')
    set('IMAGE_BLOCK_DEVICE_WITHOUT_PART', bd.device.replace(/(loop\d+)p\d+$/, '$1'), 'block-device')
    set('IMAGE_BLOCK_DEVICES', bd.devices ?? ` [image0]=${bd.device} `, 'block-device')
  }

  if (inputs.size !== undefined && phase.seesImageSize) {
    set('DIB_IMAGE_SIZE', String(Math.ceil(inputs.size / 1024))) // KiB, as diskimage-builder re-exports it
  }

  const warnings: string[] = []
  const vars: EnvVar[] = []
  for (const v of resolveEnvvars(inputs.envvars, inputs.hostEnv)) {
    if (own.has(v.name)) {
      warnings.push(`--envvar ${v.name} is ignored: virt-dib sets ${v.name} itself`)
      continue
    }
    vars.push(v)
  }
  vars.push(...own.values())
  return { vars, warnings }
}
