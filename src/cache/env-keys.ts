// Which environment variables a phase sees count in its cache key: one table for every variable the
// environment model (src/elements/environment.ts) can give a phase, each keyed, excluded or a
// block-device input. A unit test builds every phase's environment and fails on a name not here.
import { createHash } from 'node:crypto'

import { formatDibEnv, type EnvVar } from '../elements/environment.js'
import type { Where } from '../events.js'

/**
 * - `keyed`: the value's hash is an input of every phase that sees it.
 * - `excluded`: never an input (`why` says what it is derived from); a rebuild under another
 *   `--name`, workspace or checkout path still hits.
 * - `block-device`: an input only from the disk steps on (block-device.d, the block-device step
 *   and after; every step when the tree is built in place on the layout).
 */
export type EnvClass = 'keyed' | 'excluded' | 'block-device'

export interface EnvRule {
  readonly class: EnvClass
  readonly why: string
  /** What the variable is in extra-data.d, the host phase, when it differs (a host path, mostly). */
  readonly onHost?: { readonly class: EnvClass; readonly why: string }
}

const keyed = (why: string): EnvRule => ({ class: 'keyed', why })
const excluded = (why: string): EnvRule => ({ class: 'excluded', why })
const HOST_PATH = { class: 'excluded', why: 'a host path of this build (the FUSE view, the workspace)' } as const

/**
 * Every variable virt-dib itself sets for a phase (source `virt-dib` or `block-device`), plus the
 * --envvar names only disk planning reads. Constants are keyed: they cost nothing and a virt-dib
 * that changes one must not reuse trees made under the old value.
 */
export const ENV_TABLE: Readonly<Record<string, EnvRule>> = Object.freeze({
  LC_ALL: keyed('constant'),
  ARCH: keyed('--arch'),
  IMAGE_NAME: excluded('the output name (--name)'),
  IMAGE_ELEMENT: keyed('the expanded element names'),
  DIB_ARGS: excluded('argv: holds the output name and cache flags; the options that change the tree are keyed'),
  DIB_ENV: keyed(
    "the caller's DIB_* variables (hashed without those this table excludes or leaves to the block-device step)",
  ),
  DIB_OFFLINE: keyed('--no-network'),
  DIB_DEBUG_TRACE: keyed('--debug: elements may do more than trace under it'),
  // Only diskimage-builder's own finish (lib/common-functions) reads it, never an element: builds
  // that differ in --checksum share their tree; the disk steps still count it.
  DIB_CHECKSUM: {
    class: 'block-device',
    why: '--checksum: read by no element (the checksum files are an output step)',
  },
  DIB_ROOT_LABEL: keyed("the layout's root label (getval, seen from root.d)"),
  DIB_IMAGE_ROOT_FS_UUID: {
    class: 'block-device',
    why: 'random per build unless the plan is seeded: an input of the disk steps only',
  },
  FS_TYPE: keyed('--fs-type'),
  DIB_NO_TMPFS: keyed('constant'),
  DIB_MIN_TMPFS: keyed('constant'),
  IMAGE_TYPE: keyed('constant'),
  SKIP_BASE: keyed('--skip-base'),
  DIB_ROOT_FSTYPE: keyed("the layout's root file system type (getval, seen from root.d)"),
  DIB_MOUNTPOINTS: keyed("the layout's mount points (getval, seen from root.d)"),
  DIB_BOOT_LABEL: keyed("the layout's boot label (getval, seen from root.d)"),
  IMAGE_ELEMENT_YAML: excluded("the elements' host directories; their content is keyed (scripts, element files)"),
  ELEMENTS_PATH: excluded("the element paths on the host (-p); the elements' content is keyed"),
  TMP_MOUNT_PATH: { ...keyed('/sysroot in the appliance, empty in the chroot'), onHost: HOST_PATH },
  TMP_HOOKS_PATH: { ...keyed('a guest path (constant)'), onHost: HOST_PATH },
  TMP_BUILD_DIR: { ...keyed('a guest path (constant)'), onHost: HOST_PATH },
  TMP_IMAGE_DIR: { ...keyed('a guest path (constant)'), onHost: HOST_PATH },
  TMPDIR: keyed('a guest path (constant)'),
  _LIB: {
    ...keyed('a guest path (constant)'),
    onHost: { class: 'excluded', why: "-B as given; the lib folder's content is keyed (lib)" },
  },
  DIB_LOCKFILES: { ...keyed('a guest path (constant)'), onHost: { class: 'excluded', why: "under the caller's HOME" } },
  DIB_IMAGE_CACHE: {
    ...keyed('a guest path (constant)'),
    onHost: { class: 'excluded', why: '--image-cache: a host cache folder' },
  },
  DIB_PYTHON_EXEC: keyed('/usr/bin/python3 in the appliance; --python on the host'),
  DIB_MANIFEST_SAVE_DIR: excluded('`$NAME.d`: derived from the output name'),
  DIB_BLOCK_DEVICE_PARAMS_YAML: { ...keyed('a guest path (constant)'), onHost: HOST_PATH },
  HOME: keyed('a guest path (constant)'),
  PATH: {
    ...keyed('guest paths (constant)'),
    onHost: { class: 'excluded', why: "the caller's PATH and the workspace's fake bin" },
  },
  TARGET_ROOT: { ...keyed('/sysroot (constant)'), onHost: HOST_PATH },
  IMAGE_BLOCK_DEVICE: excluded("the device this build's appliance gave the disk; the layout deciding it is keyed"),
  IMAGE_BLOCK_DEVICE_WITHOUT_PART: excluded('derived from IMAGE_BLOCK_DEVICE'),
  IMAGE_BLOCK_DEVICES: excluded('derived from the devices the appliance gave'),
  DIB_IMAGE_SIZE: { class: 'block-device', why: '--size' },
  // Given with --envvar (or the caller's environment): only the layout reads it.
  DIB_BLOCK_DEVICE_CONFIG: { class: 'block-device', why: 'the block-device layout (the plan keys the layout itself)' },
})

/** The class of one variable as a phase at `where` got it from phaseEnvironment(); undefined = not in the table. */
export function classifyVar(v: Pick<EnvVar, 'name' | 'source'>, where: Where): EnvRule | undefined {
  const rule = ENV_TABLE[v.name]
  // A user's --envvar (or a caller's DIB_* on the host) is keyed by value, unless only disk planning reads it.
  if (v.source === 'envvar' || v.source === 'host') {
    return rule?.class === 'block-device' ? rule : keyed('a user variable (--envvar)')
  }
  if (rule === undefined) return undefined
  return where === 'host' && rule.onHost ? { ...rule, ...rule.onHost } : rule
}

/**
 * What extra-data.d inherits from virt-dib's own process besides the model (prepareHostPhase merges
 * the host environment under it): the caller's DIB_* are keyed, the rest is the host's business.
 */
export function classifyHostPassthrough(name: string): EnvRule {
  if (ENV_TABLE[name]?.class === 'block-device') return ENV_TABLE[name]
  return name.startsWith('DIB_')
    ? keyed("the caller's DIB_* variable (extra-data.d runs on the host)")
    : excluded("the caller's process environment (extra-data.d runs on the host)")
}

/** sha256 hex of a string. */
export function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex')
}

export interface PhaseEnvKeys {
  /** `env:NAME` → sha256 of the value, for the variables that count in this step. */
  readonly inputs: Record<string, string>
  /** Names the table does not classify (a bug: the test fails on them; stepKeys throws). */
  readonly unclassified: string[]
}

/**
 * The inputs of one phase's environment: `vars` as phaseEnvironment() gave them, `disk` when the
 * step is a disk step (block-device inputs count), `hostEnv` the caller's environment (DIB_ENV is
 * hashed from its DIB_* variables minus the excluded and, before the disk steps, the block-device
 * ones; for extra-data.d, the inherited DIB_* count too).
 */
export function envKeyInputs(
  vars: readonly EnvVar[],
  where: Where,
  disk: boolean,
  hostEnv: Readonly<NodeJS.ProcessEnv>,
): PhaseEnvKeys {
  const inputs: Record<string, string> = {}
  const unclassified: string[] = []
  const counts = (rule: EnvRule) => rule.class === 'keyed' || (disk && rule.class === 'block-device')
  const seen = new Set<string>()
  for (const v of vars) {
    seen.add(v.name)
    const rule = classifyVar(v, where)
    if (rule === undefined) unclassified.push(v.name)
    else if (counts(rule)) inputs[`env:${v.name}`] = sha256(v.name === 'DIB_ENV' ? dibEnvKey(hostEnv, disk) : v.value)
  }
  if (where === 'host') {
    for (const [name, value] of Object.entries(hostEnv)) {
      if (seen.has(name) || value === undefined) continue
      if (counts(classifyHostPassthrough(name))) inputs[`env:${name}`] = sha256(value)
    }
  }
  return { inputs, unclassified }
}

/** DIB_ENV as it counts: without the variables that do not (their values change it otherwise). */
function dibEnvKey(hostEnv: Readonly<NodeJS.ProcessEnv>, disk: boolean): string {
  const kept: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(hostEnv)) {
    const rule = ENV_TABLE[k]
    if (rule?.class === 'excluded' || (rule?.class === 'block-device' && !disk)) continue
    kept[k] = v
  }
  return formatDibEnv(kept)
}
