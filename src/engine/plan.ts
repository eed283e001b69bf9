// The build plan: everything a build does, decided before anything runs, as one frozen value.
// planBuild() (src/api/plan.ts) checks the request and makes it; the engine only reads it. It
// keeps no raw options: every field is already normalised, so two plans of the same request with
// the same seed are equal, and a step's inputs can be named by plan field.
import { createHash, randomUUID } from 'node:crypto'

import type { ConfigSource } from '../blockdev/config.js'
import type { BlockDeviceLayout } from '../blockdev/layout.js'
import type { EnvInputs } from '../elements/environment.js'
import type { HooksPlan } from '../elements/hooks.js'
import type { ElementIndex, Resolution } from '../elements/types.js'
import type { OutputSettings } from '../outputs/registry.js'
import type { OutputFormat } from '../outputs/types.js'

/** How the appliance is made and started. */
export interface ApplianceSettings {
  memsize: number | undefined
  smp: number | undefined
  network: boolean
  /** libguestfs verbose messages and call trace, as debug events. */
  verbose: boolean
  trace: boolean
  /** libguestfs's stock appliance instead of virt-dib's. */
  stock: boolean
  /** Debian packages added to virt-dib's appliance. */
  packages: readonly string[]
  /** --drive: a persistent helper drive (HOME, the image cache, logs). */
  drive: { path: string; format: 'raw' | 'qcow2' | undefined } | undefined
}

export interface BuildPlan {
  /** --name as given, and its parts. */
  readonly name: string
  readonly imageName: string
  readonly outputDir: string
  /** Absolute `<outputDir>/<imageName>`: outputs are `<outputPath>.<ext>`. */
  readonly outputPath: string
  /** The output formats, sorted by name. */
  readonly formats: readonly OutputFormat[]
  /** The chosen formats' own settings, normalised with their defaults (outputs/registry.ts). */
  readonly outputSettings: OutputSettings
  readonly index: ElementIndex
  readonly resolution: Resolution
  readonly hooks: HooksPlan
  /** diskimage-builder's lib directory (-B). */
  readonly libPath: string
  readonly excludeScripts: readonly string[]
  readonly arch: string
  readonly fsType: string
  /** The root file system's label (from the layout; --root-label or the default for mkfs_root). */
  readonly rootLabel: string
  /** --root-label and --mkfs-options as given: params.yaml carries them to dib-block-device. */
  readonly mkfs: { readonly rootLabel: string | undefined; readonly options: string | undefined }
  /** Random unless the plan was given a seed (see {@link rootFsUuidFrom}). */
  readonly rootFsUuid: string
  /** SOURCE_DATE_EPOCH: the tree outputs are made reproducible with it (src/repro/epoch.ts). */
  readonly sourceDateEpoch: number | undefined
  readonly size: number
  /** The block-device layout (DIB_BLOCK_DEVICE_CONFIG, an element's block-device-*.yaml, or the default). */
  readonly layout: BlockDeviceLayout
  readonly layoutSource: ConfigSource
  /** One file system on the device a block-device.d script named with IMAGE_BLOCK_DEVICE=. */
  readonly overrideLayout: BlockDeviceLayout
  /**
   * The tree is built straight onto the layout (created before root.d) instead of apart and
   * copied on after block-device.d: possible when the layout is one POSIX file system at /.
   */
  readonly buildInPlace: boolean
  readonly python: string
  readonly ramdisk: boolean
  /** DIB_DEFAULT_INSTALLTYPE's default. */
  readonly installType: string
  /** Debian packages installed into the image after pre-install.d (--extra-packages). */
  readonly extraPackages: readonly string[]
  readonly checksum: boolean
  /** DIB_DEBUG_TRACE; above 0 the runners trace too. */
  readonly debug: number
  /** --no-delete-on-failure: partial outputs stay under their temporary names. */
  readonly keepPartialOutputs: boolean
  readonly appliance: Readonly<ApplianceSettings>
  /** The environment host phases inherit and --envvar reads (a copy). */
  readonly env: Readonly<NodeJS.ProcessEnv>
  /** The environment model's inputs (block device and host mount are added during the build). */
  readonly envInputs: EnvInputs
  readonly warnings: readonly string[]
  /** The step cache (--cache), absolute `dir`; undefined when it is off. */
  readonly cache: { readonly dir: string; readonly maxSize: number; readonly maxAgeMs: number | undefined } | undefined
  /** --rebuild-from as a cached step name (`install.d`, `block-device`): no snapshot from it on is reused. */
  readonly rebuildFrom: string | undefined
  /** A batch layer over another build (`base:`): see {@link PlanLayer}. */
  readonly layer: PlanLayer | undefined
}

/**
 * A batch layer: a build of its base's elements and its own that starts from the base's snapshot
 * of the step before `from` (its first step whose inputs differ from the base's, the element list
 * aside: src/engine/layer.ts). Its steps before `from` are the base's, under the base's keys; from
 * there on every step runs with the layer's whole element set, as a flat build. `from` undefined:
 * the first step differs already, and the layer is built flat.
 */
export interface PlanLayer {
  readonly base: BuildPlan
  /** The base's name in the batch (its label). */
  readonly baseName: string
  readonly from: string | undefined
}

/** What a plan can be given besides the request. */
export interface PlanSeed {
  /**
   * Makes the plan's generated values (the root file system UUID) derive from this string instead
   * of being random: two plans of the same request with the same seed are equal.
   */
  seed?: string
  /** Makes the plan a batch layer (src/api/plan-layer.ts decides `from`). */
  layer?: PlanLayer
}

/** The root file system UUID: a version-4-shaped UUID from the seed, or a random one. */
export function rootFsUuidFrom(seed: string | undefined): string {
  if (seed === undefined) return randomUUID()
  const b = createHash('sha256').update(`virt-dib root-fs-uuid\0${seed}`).digest()
  b[6] = (b[6]! & 0x0f) | 0x40
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = b.subarray(0, 16).toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/**
 * Freezes a plan and everything it holds (objects and arrays; Maps and Sets are frozen objects
 * but keep their methods). Shared values such as the format descriptors are frozen too: they are
 * constants anyway.
 */
export function freezePlan(plan: BuildPlan): BuildPlan {
  deepFreeze(plan, new Set())
  return plan
}

function deepFreeze(value: unknown, seen: Set<unknown>): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return
  seen.add(value)
  for (const v of Object.values(value)) deepFreeze(v, seen)
  if (value instanceof Map) {
    for (const [k, v] of value) {
      deepFreeze(k, seen)
      deepFreeze(v, seen)
    }
  }
  if (value instanceof Set) for (const v of value) deepFreeze(v, seen)
  Object.freeze(value)
}
