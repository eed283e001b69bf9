// planBuild(): everything that can be checked before an appliance is launched — options,
// elements, hooks, host tools, output directory — in one pass that throws a clear error.
import { accessSync, constants, existsSync, statSync, statfsSync } from 'node:fs'
import { homedir } from 'node:os'
import { basename, dirname, resolve } from 'node:path'

import { chooseConfigSource, configToGraph, DEFAULT_CONFIG } from '../blockdev/config.js'
import { planValues } from '../blockdev/devices.js'
import { defaultRootLabel, MAX_LABEL, planLayout, type RootParams } from '../blockdev/layout.js'
import { canBuildInPlace } from '../blockdev/script.js'
import { normalizePhaseName, PHASE_STEP_NAMES } from '../cache/keys.js'
import { splitShellWords } from '../blockdev/shell-words.js'
import { resolveElements } from '../elements/deps.js'
import { loadElementIndex } from '../elements/discover.js'
import { resolveEnvvars, type EnvInputs } from '../elements/environment.js'
import { planHooksTree } from '../elements/hooks.js'
import { UsageError } from '../errors.js'
import { resolvePython } from '../host/python.js'
import { resolveSourceDateEpoch } from '../repro/epoch.js'
import { freezePlan, rootFsUuidFrom, type BuildPlan, type PlanLayer, type PlanSeed } from '../engine/plan.js'
import { resolveFormats, resolveOutputSettings } from '../outputs/registry.js'
import { hostArch } from '../util/host-arch.js'
import { DEFAULT_CACHE_MAX_SIZE, DEFAULT_FORMATS, DEFAULT_SIZE, defaultCacheDir, type BuildOptions } from './options.js'

/** Architecture names (dpkg's and the kernel's): letters, digits, _ and -, nothing else. */
const ARCH_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/

/** What --fs-type takes (the root file system; its label limit is blockdev/layout.ts MAX_LABEL). */
const ROOT_FS_TYPES = ['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat']

/**
 * statfs magic numbers (linux/magic.h) of kernel pseudo file systems: root may pass the access()
 * check on them, but they hold no image (writes fail or vanish), found only after a launch.
 */
const PSEUDO_FS = new Map<number, string>([
  [0x62656572, 'sysfs'],
  [0x9fa0, 'proc'],
  [0x1cd1, 'devpts'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0x6165676c, 'pstore'],
  [0xcafe4a11, 'bpf'],
  [0x62656570, 'configfs'],
  [0x65735543, 'fusectl'],
  [0x42494e4d, 'binfmt_misc'],
  [0x6e736673, 'nsfs'],
  [0xf97cff8c, 'selinuxfs'],
  [0x19800202, 'mqueue'],
  [0x958458f6, 'hugetlbfs'],
  [0xde5e81e4, 'efivarfs'],
])

/** The pseudo file system `path` is on, if it is on one. */
export function pseudoFsOf(path: string): string | undefined {
  let type: number
  try {
    type = statfsSync(path).type
  } catch {
    return undefined // the checks that follow say what is wrong with the path
  }
  return PSEUDO_FS.get(type)
}

function checkWritableDir(dir: string): void {
  if (!existsSync(dir)) throw new UsageError(`output directory ‘${dir}’ does not exist`)
  if (!statSync(dir).isDirectory()) throw new UsageError(`output directory ‘${dir}’ is not a directory`)
  const pseudo = pseudoFsOf(dir)
  if (pseudo !== undefined) {
    throw new UsageError(`output directory ‘${dir}’ is on a ${pseudo} file system, which cannot hold images`)
  }
  try {
    accessSync(dir, constants.W_OK)
  } catch {
    throw new UsageError(`output directory ‘${dir}’ is not writable`)
  }
}

/**
 * Checks a request and plans it. The plan is frozen; its root file system UUID is random unless
 * `seed` is given (two plans of the same request with the same seed are equal).
 */
export function planBuild(options: BuildOptions, { seed, layer }: PlanSeed = {}): BuildPlan {
  // A copy: the plan is frozen, and must not change when the caller's environment does.
  const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env) }
  const warnings: string[] = []
  if (!options.libPath) throw new UsageError('-B must be specified')
  if (options.elements.length === 0) throw new UsageError('at least one distribution root element must be specified')
  if (!existsSync(resolve(options.libPath, 'die'))) {
    throw new UsageError('the specified base path is not the diskimage-builder library', {
      hint: `‘${options.libPath}/die’ does not exist; -B takes diskimage-builder's lib directory`,
    })
  }
  const formats = resolveFormats(options.formats ?? DEFAULT_FORMATS)

  const size = options.size ?? DEFAULT_SIZE
  if (!Number.isSafeInteger(size) || size <= 0) throw new UsageError('--size must be greater than zero')
  if (size < 16 * 1024 * 1024) throw new UsageError(`--size ${size} is too small for an image (16M at least)`)
  const fsType = options.fsType ?? 'ext4'
  if (!ROOT_FS_TYPES.includes(fsType)) {
    throw new UsageError(`unsupported --fs-type ‘${fsType}’`, {
      hint: `supported: ${ROOT_FS_TYPES.join(', ')}`,
    })
  }
  const rootLabel = options.rootLabel ?? defaultRootLabel(fsType)
  if (rootLabel.length > MAX_LABEL[fsType]!) {
    throw new UsageError(
      `root label ‘${rootLabel}’ is too long for ${fsType} (at most ${MAX_LABEL[fsType]} characters)`,
    )
  }
  for (const [n, v, min, max] of [
    ['-m', options.memsize, 256, 1024 * 1024],
    ['--smp', options.smp, 1, 255],
    ['--debug', options.debug, 0, 1000],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
      throw new UsageError(
        n === '--debug' ? '--debug parameter must be >= 0' : `${n} must be between ${min} and ${max}`,
      )
    }
  }
  if (options.drive !== undefined) {
    try {
      accessSync(options.drive, constants.R_OK | constants.W_OK)
    } catch {
      throw new UsageError(`--drive ‘${options.drive}’ does not exist or is not readable and writable`)
    }
    // A directory or a character device (/dev/null) would only fail when the appliance opens it.
    const st = statSync(options.drive)
    if (!st.isFile() && !st.isBlockDevice()) {
      const what = st.isDirectory() ? 'a directory' : st.isCharacterDevice() ? 'a character device' : 'a special file'
      throw new UsageError(`--drive ‘${options.drive}’ is ${what}, not a regular file or a block device`)
    }
  }
  if (options.driveFormat !== undefined && !['raw', 'qcow2'].includes(options.driveFormat)) {
    throw new UsageError(`--drive-format must be raw or qcow2, not ‘${options.driveFormat}’`)
  }

  // --arch becomes part of a file name (block-device-ARCH.yaml) and ARCH: a plain name only.
  if (options.arch !== undefined && !ARCH_NAME.test(options.arch)) {
    throw new UsageError(`invalid --arch ‘${options.arch}’`, {
      hint: 'an architecture name such as amd64, x86_64, arm64, aarch64, i386, ppc64le or s390x',
    })
  }
  if (options.mkfsOptions !== undefined) splitShellWords(options.mkfsOptions, '--mkfs-options')
  const { cache, rebuildFrom } = planCache(options, env)

  const name = options.name ?? 'image'
  if (name === '' || name.endsWith('/')) throw new UsageError(`invalid --name ‘${name}’`)
  const outputPath = resolve(name)
  const outputDir = dirname(outputPath)
  const imageName = basename(outputPath)
  checkWritableDir(outputDir)

  const python = resolvePython(options.python, env)
  // Here, as the original checked them: after the output directory and python.
  const outputSettings = resolveOutputSettings(
    formats.map((f) => f.name),
    options,
  )
  for (const f of formats) f.checkHost?.()

  const index = loadElementIndex(options.elementPaths)
  for (const o of index.overrides) warnings.push(`element ${o.name}: ${o.used} overrides ${o.ignored}`)
  const arch = options.arch ?? hostArch()
  const resolution = resolveElements(index, {
    elements: options.elements,
    skipBase: options.skipBase ?? false,
    ramdisk: options.ramdisk ?? false,
    ...(options.ramdiskElement !== undefined ? { ramdiskElement: options.ramdiskElement } : {}),
    excludeElements: options.excludeElements ?? [],
    arch,
  })
  const hooks = planHooksTree(resolution.elements, options.excludeScripts ?? [])
  // With the step cache, a rebuild must find the layout it stored: the file systems' UUIDs derive
  // from the request (not its name, nor its size: builds of other sizes share the tree, which may
  // have seen DIB_IMAGE_ROOT_FS_UUID), as if seeded; else random as the original's.
  const cacheSeed =
    cache === undefined
      ? undefined
      : `step-cache\0${JSON.stringify([resolution.elements.map((e) => e.name), fsType, arch, options.rootLabel ?? null])}`
  // A layer restored after its base's block-device step has the base's file systems.
  const rootFsUuid = layer && startsAfterLayout(layer) ? layer.base.rootFsUuid : rootFsUuidFrom(seed ?? cacheSeed)
  const rootParams: RootParams = {
    diskSize: size,
    fsType,
    rootLabel: options.rootLabel,
    mkfsOptions: options.mkfsOptions,
    rootFsUuid,
  }
  // As diskimage-builder, the layout may come from the environment; --envvar wins over the host.
  const envvarValues = resolveEnvvars(options.envvars ?? [], env)
  const configVar =
    envvarValues.find((v) => v.name === 'DIB_BLOCK_DEVICE_CONFIG')?.value ?? env['DIB_BLOCK_DEVICE_CONFIG']
  const sourceDateEpoch = resolveSourceDateEpoch(
    options.sourceDateEpoch,
    envvarValues.find((v) => v.name === 'SOURCE_DATE_EPOCH')?.value,
    env['SOURCE_DATE_EPOCH'],
  )
  const source = chooseConfigSource(configVar, resolution.elements, arch)
  const layout = planLayout(configToGraph(source), source.origin, rootParams)
  warnings.push(...layout.warnings)
  // The device a block-device.d script names is not the --size disk: no size to check against.
  const overrideLayout = planLayout(configToGraph({ origin: 'default', yaml: DEFAULT_CONFIG }), 'default', rootParams, {
    checkFit: false,
  })
  const values = planValues(layout)
  const imageCache = options.imageCache ?? resolve(env['HOME'] ?? homedir(), '.cache/image-create')

  const envInputs: EnvInputs = {
    arch,
    imageName,
    elements: resolution.elements,
    argv: options.argv ?? ['virt-dib'],
    hostEnv: env,
    envvars: options.envvars ?? [],
    offline: options.network === false,
    debugTrace: options.debug ?? 0,
    checksum: options.checksum ?? false,
    layout: {
      rootLabel: values['root-label'],
      rootFsType: values['root-fstype'],
      mountPoints: values['mount-points'],
      ...(values['boot-label'] !== undefined ? { bootLabel: values['boot-label'] } : {}),
    },
    rootFsUuid,
    ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}),
    fsType,
    elementPaths: options.elementPaths,
    libPath: options.libPath,
    imageCache,
    python,
    skipBase: options.skipBase ?? false,
    size,
  }
  const drive = options.drive
  return freezePlan({
    name,
    imageName,
    outputDir,
    outputPath,
    formats,
    outputSettings,
    index,
    resolution,
    hooks,
    libPath: options.libPath,
    excludeScripts: options.excludeScripts ?? [],
    arch,
    fsType,
    rootLabel: layout.root.label,
    mkfs: { rootLabel: options.rootLabel, options: options.mkfsOptions },
    rootFsUuid,
    sourceDateEpoch,
    size,
    layout,
    layoutSource: source,
    overrideLayout,
    // With the step cache the tree is built apart, on a drive of a fixed size: its snapshots do not depend on --size.
    buildInPlace: cache === undefined && canBuildInPlace(layout),
    python,
    ramdisk: resolution.ramdisk,
    installType: options.installType ?? 'source',
    extraPackages: options.extraPackages ?? [],
    checksum: options.checksum ?? false,
    debug: options.debug ?? 0,
    keepPartialOutputs: options.deleteOnFailure === false,
    appliance: {
      memsize: options.memsize,
      smp: options.smp,
      network: options.network !== false,
      verbose: options.verbose ?? false,
      trace: options.trace ?? false,
      stock: options.stockAppliance ?? false,
      packages: options.appliancePackages ?? [],
      drive: drive === undefined ? undefined : { path: drive, format: options.driveFormat },
    },
    env,
    envInputs,
    warnings,
    cache,
    rebuildFrom,
    layer,
  })
}

/** The layer starts after the block-device step (it restores the base's disk). */
function startsAfterLayout(layer: PlanLayer): boolean {
  if (layer.from === undefined) return false
  return PHASE_STEP_NAMES.indexOf(layer.from) > PHASE_STEP_NAMES.indexOf('block-device')
}

/** --rebuild-from as the step name the cache keys (`install` → `install.d`), or a one-line error. */
function rebuildFromStep(name: string): string {
  const step = normalizePhaseName(name)
  if (step !== undefined) return step
  throw new UsageError(
    `--rebuild-from ‘${name}’ is not a phase: one of ${PHASE_STEP_NAMES.join(', ')} (.d may be left out)`,
  )
}

/** `cache` and `rebuildFrom` checked and normalised (an absolute folder, a hook name). */
function planCache(options: BuildOptions, env: NodeJS.ProcessEnv): Pick<BuildPlan, 'cache' | 'rebuildFrom'> {
  const rebuildFrom = options.rebuildFrom === undefined ? undefined : rebuildFromStep(options.rebuildFrom)
  const c = options.cache
  if (c === false) return { cache: undefined, rebuildFrom: undefined } // forced off: nothing to rebuild from
  if (c === undefined) {
    if (rebuildFrom !== undefined) throw new UsageError('--rebuild-from needs the step cache (--cache)')
    return { cache: undefined, rebuildFrom: undefined }
  }
  const maxSize = c.maxSize ?? DEFAULT_CACHE_MAX_SIZE
  if (!Number.isSafeInteger(maxSize) || maxSize <= 0) throw new UsageError('--cache-max-size must be greater than zero')
  if (c.maxAge !== undefined && (!Number.isSafeInteger(c.maxAge) || c.maxAge <= 0)) {
    throw new UsageError('--cache-max-age must be greater than zero')
  }
  if (c.dir === '') throw new UsageError('--cache-dir must not be empty')
  const dir = resolve(c.dir ?? defaultCacheDir(env))
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new UsageError(`cache directory ‘${dir}’ is not a directory`)
  }
  return { cache: { dir, maxSize, maxAgeMs: c.maxAge }, rebuildFrom }
}
