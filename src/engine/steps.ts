// The steps of a build, in diskimage-builder's order: one row per step with what it belongs to,
// the plan fields it depends on, the state it needs and gives. planSteps() picks the rows a plan
// runs; the dry run lists exactly those, and the build runs exactly those.
import { join } from 'node:path'

import type { HookName } from '../elements/environment.js'
import { extraPackages, extraPackagesProgress, runsExtraPackages } from '../phases/extra-packages.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/runner/run-scripts.js'
import type { OutputFormat } from '../outputs/types.js'
import { WORKSPACE } from '../elements/layout.js'
import {
  addAuxDrives,
  AUX_IMAGE_SIZE,
  launchAppliance,
  openAppliance,
  prepareBuildRoot,
  resumeBuildRoot,
  TREE_DISK_SIZE,
} from './appliance.js'
import type { Boundary } from './cache-boundaries.js'
import { stopCaching } from './cache-run.js'
import { storeSnapshot, type LiveDrives } from './snapshot.js'
import type { BuildContext } from './context.js'
import {
  diskConversions,
  exportChecksums,
  exportDiskOutput,
  exportExtraData,
  archiveFormats,
  exportArchiveFormat,
  exportTar,
  exportTreeArchive,
} from './export.js'
import { EXTRA_DATA_VIEW, hasExtraData, runExtraData } from './extra-data.js'
import { createBlockDevice, finalizeImage, freezeImage, releaseImage } from './image.js'
import { defineStep, type AnyStep, type StepPart } from './pipeline.js'
import type { BuildPlan } from './plan.js'
import { installTypeFile, prepareAuxTree } from './prepare-aux.js'
import { archiveFile } from '../outputs/stream.js'

export type BuildStep = AnyStep<BuildContext>

const engine = { kind: 'engine' } as const

/**
 * What every phase's scripts see: the hooks tree, their environment, the runner's settings, the
 * layout's answers (params.yaml, getval), the install type's environment file, and the appliance
 * with its helper drive. (A step's cache key also chains the keys of the steps before it.)
 */
const PHASE_INPUTS = [
  'hooks',
  'envInputs',
  'excludeScripts',
  'debug',
  'layout',
  'layoutSource',
  'mkfs',
  'installType',
  'appliance',
] as const satisfies readonly (keyof BuildPlan)[]

/** A step that needs no state and gives none: it only acts on the build. */
function act(
  name: string,
  part: StepPart,
  reads: readonly (keyof BuildPlan)[],
  fn: (ctx: BuildContext) => Promise<unknown>,
): BuildStep {
  return defineStep<BuildContext>({
    name,
    part,
    reads,
    needs: [],
    gives: [],
    async run(ctx) {
      await fn(ctx)
      return {}
    },
  })
}

/** A diskimage-builder phase run in the appliance (all but extra-data.d, which has its own steps). */
function phaseStep(hook: HookName): BuildStep {
  return act(hook, { kind: 'phase', hook }, PHASE_INPUTS, (ctx) => runPhase(ctx, phase(hook)))
}

const prepareAux = defineStep<BuildContext, never, 'auxDir'>({
  name: 'prepare-aux',
  part: engine,
  reads: [...PHASE_INPUTS, 'libPath', 'imageName', 'extraPackages', 'fsType', 'resolution'],
  needs: [],
  gives: ['auxDir'],
  run: async (ctx) => ({ auxDir: prepareAuxTree(ctx) }),
})

const appliance = defineStep<BuildContext, never, 'disk' | 'exportDrive'>({
  name: 'appliance',
  part: engine,
  reads: [
    'appliance',
    'env',
    'formats',
    'ramdisk',
    'outputPath',
    'outputDir',
    'keepPartialOutputs',
    'size',
    'buildInPlace',
  ],
  needs: [],
  gives: ['disk', 'exportDrive'],
  run: (ctx) => openAppliance(ctx),
})

const auxImage = defineStep<BuildContext, 'auxDir'>({
  name: 'aux-image',
  part: engine,
  reads: ['appliance'],
  needs: ['auxDir'],
  gives: [],
  async run(ctx, { auxDir }) {
    await addAuxDrives(ctx, auxDir)
    return {}
  },
})

const launch = defineStep<BuildContext, 'disk'>({
  name: 'launch',
  part: engine,
  reads: ['outputDir'],
  needs: ['disk'],
  gives: [],
  async run(ctx, { disk }) {
    await launchAppliance(ctx, disk)
    return {}
  },
})

const buildRoot = defineStep<BuildContext, never, 'outDevice'>({
  name: 'build-root',
  part: engine,
  reads: ['buildInPlace', 'layout', 'appliance'],
  needs: [],
  gives: ['outDevice'],
  run: async (ctx) => ({ outDevice: await prepareBuildRoot(ctx) }),
})

/** diskimage-builder writes DIB_DEFAULT_INSTALLTYPE's file after root.d: root.d does not see it. */
const installType = act('install-type', engine, ['installType'], async (ctx) => {
  const file = installTypeFile(ctx)
  await ctx.g.write(file.path, file.content)
})

const extraData = act(
  'extra-data.d',
  { kind: 'phase', hook: 'extra-data.d' },
  [...PHASE_INPUTS, 'env', 'libPath', 'python', 'imageName', 'resolution'],
  runExtraData,
)

/** Releasing the FUSE view extra-data.d ran against (only when it had scripts). */
const extraDataUnmount = act('extra-data-unmount', { kind: 'phase', hook: 'extra-data.d' }, [], (ctx) =>
  ctx.release(EXTRA_DATA_VIEW),
)

const extraPackagesStep = act(
  'extra-packages',
  { kind: 'phase', hook: 'extra-packages' },
  [...PHASE_INPUTS, 'extraPackages'],
  async (ctx) => {
    ctx.progress(extraPackagesProgress(ctx.plan.extraPackages))
    await runPhase(ctx, extraPackages)
  },
)

const blockDeviceHooks = defineStep<BuildContext, never, 'namedDevice'>({
  name: 'block-device.d',
  part: { kind: 'phase', hook: 'block-device.d' },
  reads: PHASE_INPUTS,
  needs: [],
  gives: ['namedDevice'],
  run: async (ctx) => ({ namedDevice: (await runPhase(ctx, phase('block-device.d'))).blockDevice }),
})

const blockDevice = defineStep<BuildContext, 'outDevice' | 'namedDevice' | 'disk', 'layout'>({
  name: 'block-device',
  part: engine,
  reads: ['layout', 'overrideLayout', 'buildInPlace', 'envInputs', 'appliance'],
  needs: ['outDevice', 'namedDevice', 'disk'],
  gives: ['layout'],
  run: async (ctx, state) => ({ layout: await createBlockDevice(ctx, state) }),
})

const extractData = defineStep<BuildContext, 'exportDrive', 'extraDataDir'>({
  name: 'extract-data',
  part: engine,
  reads: ['imageName', 'outputPath', 'outputDir', 'keepPartialOutputs'],
  needs: ['exportDrive'],
  gives: ['extraDataDir'],
  run: async (ctx, { exportDrive }) => ({ extraDataDir: await exportExtraData(ctx, exportDrive) }),
})

const finalizeImageStep = act('finalize-image', engine, ['appliance'], finalizeImage)

/** Read-only image file systems: the host converts the disk while the guest still reads the tree. */
const freezeImageStep = defineStep<BuildContext, 'layout'>({
  name: 'freeze-image',
  part: engine,
  reads: [],
  needs: ['layout'],
  gives: [],
  async run(ctx, { layout }) {
    await freezeImage(ctx, layout)
    return {}
  },
})

/** What every output step reads: where outputs go, their formats' settings, checksums while written. */
const OUTPUT_INPUTS = [
  'formats',
  'outputSettings',
  'outputPath',
  'outputDir',
  'keepPartialOutputs',
  'checksum',
  'env',
  'sourceDateEpoch',
] as const satisfies readonly (keyof BuildPlan)[]

/** The image root's archive onto the export drive: read on the host where it can be, else by the guest's tar. */
const treeArchive = defineStep<BuildContext, 'layout' | 'disk' | 'exportDrive' | 'outDevice', 'archiveBytes'>({
  name: 'tree-archive',
  part: engine,
  reads: ['env', 'sourceDateEpoch'],
  needs: ['layout', 'disk', 'exportDrive', 'outDevice'],
  gives: ['archiveBytes'],
  run: async (ctx, at) => ({ archiveBytes: await exportTreeArchive(ctx, at) }),
})

/** tar: the archive itself, cut to its length once the appliance no longer holds the drive. */
function tarStep(f: OutputFormat): BuildStep {
  return defineStep<BuildContext, 'exportDrive' | 'archiveBytes'>({
    name: f.name,
    part: { kind: 'output', format: f.name },
    reads: OUTPUT_INPUTS,
    needs: ['exportDrive', 'archiveBytes'],
    gives: [],
    async run(ctx, { exportDrive, archiveBytes }) {
      await exportTar(ctx, f, archiveFile(exportDrive, archiveBytes))
      return {}
    },
  })
}

/** tgz, docker, squashfs: made on the host from the archive, beside the shutdown and the conversions. */
function archiveFormatStep(f: OutputFormat): BuildStep {
  return defineStep<BuildContext, 'exportDrive' | 'archiveBytes'>({
    name: f.name,
    part: { kind: 'output', format: f.name },
    reads: OUTPUT_INPUTS,
    needs: ['exportDrive', 'archiveBytes'],
    gives: [],
    startsAfter: treeArchive.name,
    async run(ctx, { exportDrive, archiveBytes }, signal) {
      await exportArchiveFormat(ctx, f, archiveFile(exportDrive, archiveBytes), signal)
      return {}
    },
  })
}

const shutdown = defineStep<BuildContext, 'layout'>({
  name: 'shutdown',
  part: engine,
  reads: [],
  needs: ['layout'],
  gives: [],
  async run(ctx, { layout }) {
    ctx.progress('Umounting the disks')
    await releaseImage(ctx, layout)
    await ctx.g.shutdown()
    await ctx.g.close()
    return {}
  },
})

function diskFormatStep(f: OutputFormat, startsAfter: string): BuildStep {
  return defineStep<BuildContext, 'disk'>({
    name: f.name,
    part: { kind: 'output', format: f.name },
    reads: OUTPUT_INPUTS,
    needs: ['disk'],
    gives: [],
    startsAfter,
    async run(ctx, { disk }, signal) {
      await exportDiskOutput(ctx, f, disk, signal)
      return {}
    },
  })
}

const checksums = act('checksums', engine, ['checksum', 'outputDir', 'keepPartialOutputs'], exportChecksums)

/** A build resumed before the block-device step: the restored tree is mounted as the image root. */
const resumeTree = defineStep<BuildContext, 'auxDir' | 'disk', 'outDevice'>({
  name: 'resume',
  part: engine,
  reads: ['appliance', 'imageName', 'hooks', 'layer'],
  needs: ['auxDir', 'disk'],
  gives: ['outDevice'],
  run: async (ctx, { auxDir, disk }) => ({
    outDevice: await resumeBuildRoot(ctx, { auxDir, disk, layout: undefined }),
  }),
})

/** A build resumed after the block-device step: the restored disk's layout is mounted instead. */
const resumeDisk = defineStep<BuildContext, 'auxDir' | 'disk', 'outDevice' | 'layout' | 'namedDevice'>({
  name: 'resume',
  part: engine,
  reads: ['appliance', 'imageName', 'layout', 'envInputs', 'hooks', 'layer'],
  needs: ['auxDir', 'disk'],
  gives: ['outDevice', 'layout', 'namedDevice'],
  async run(ctx, { auxDir, disk }) {
    const layout = ctx.plan.layout
    // Only builds whose layout is on the output disk store snapshots after the block-device step.
    return { outDevice: await resumeBuildRoot(ctx, { auxDir, disk, layout }), layout, namedDevice: undefined }
  },
})

/** Stores the build's state after a boundary step in the step cache. */
function snapshotStep(b: Boundary): BuildStep {
  if (!b.drives.includes('disk')) {
    return defineStep<BuildContext, 'disk'>({
      name: `snapshot ${b.phase}`,
      part: engine,
      reads: ['imageName', 'resolution', 'hooks', 'cache', 'size'],
      needs: ['disk'],
      gives: [],
      async run(ctx, { disk }) {
        await storeSnapshot(ctx, b, liveDrives(ctx, disk))
        return {}
      },
    })
  }
  return defineStep<BuildContext, 'disk' | 'namedDevice'>({
    name: `snapshot ${b.phase}`,
    part: engine,
    reads: ['imageName', 'resolution', 'hooks', 'cache', 'size'],
    needs: ['disk', 'namedDevice'],
    gives: [],
    async run(ctx, { disk, namedDevice }) {
      // A device a block-device.d script named is not a drive of the build: nothing to snapshot.
      if (namedDevice !== undefined)
        await stopCaching(ctx, `the layout is on ${namedDevice}, which block-device.d named`)
      await storeSnapshot(ctx, b, liveDrives(ctx, disk))
      return {}
    },
  })
}

/** The host files of the drives a snapshot reads, and their sizes. */
function liveDrives(ctx: BuildContext, disk: string): LiveDrives {
  return {
    files: {
      tree: join(ctx.workspace, WORKSPACE.treeDisk),
      aux: join(ctx.workspace, WORKSPACE.auxImage),
      disk,
    },
    sizes: { tree: TREE_DISK_SIZE, aux: AUX_IMAGE_SIZE, disk: ctx.plan.size },
  }
}

/** Steps a resumed build still runs before its restored point: they make and start the appliance. */
const KEPT_ON_RESUME: ReadonlySet<string> = new Set([prepareAux.name, appliance.name, auxImage.name, launch.name])

/** What the step cache changes in a table: snapshots after the boundaries, and the restored steps left out. */
export interface CacheSteps {
  readonly boundaries: readonly Boundary[]
  /** The boundary restored from the cache: the steps up to it are left out (bar the appliance's). */
  readonly resume: Boundary | undefined
}

function withCache(steps: readonly BuildStep[], cache: CacheSteps): BuildStep[] {
  const upTo = cache.resume ? steps.findIndex((s) => s.name === cache.resume!.after) : -1
  const out: BuildStep[] = []
  steps.forEach((s, i) => {
    if (i <= upTo && !KEPT_ON_RESUME.has(s.name)) {
      if (s.name === buildRoot.name) out.push(cache.resume!.drives.includes('disk') ? resumeDisk : resumeTree)
      return
    }
    out.push(s)
    const b = cache.boundaries.find((x) => x.after === s.name)
    if (b && i > upTo) out.push(snapshotStep(b))
  })
  return out
}

/** The steps `plan` runs, in order; with the step cache, as `cache` changes them. */
export function planSteps(plan: BuildPlan, cache?: CacheSteps): BuildStep[] {
  const table = baseSteps(plan)
  return cache ? withCache(table, cache) : table
}

function baseSteps(plan: BuildPlan): BuildStep[] {
  const steps: BuildStep[] = [
    prepareAux,
    appliance,
    auxImage,
    launch,
    buildRoot,
    phaseStep('root.d'),
    installType,
    extraData,
    ...(hasExtraData(plan) ? [extraDataUnmount] : []),
    phaseStep('pre-install.d'),
    ...(runsExtraPackages(plan.extraPackages) ? [extraPackagesStep] : []),
    phaseStep('install.d'),
    phaseStep('post-install.d'),
    phaseStep('post-root.d'),
    blockDeviceHooks,
    blockDevice,
    phaseStep('pre-finalise.d'),
    phaseStep('finalise.d'),
    phaseStep('cleanup.d'),
    extractData,
    finalizeImageStep,
  ]
  // divergence: in ramdisk mode no image is written at all (the original still wrote tarballs).
  if (plan.ramdisk) return [...steps, shutdown]
  const fromArchive = archiveFormats(plan.formats)
  const conversions = diskConversions(plan.formats)
  // The conversions run together. With tree outputs, the guest reads the frozen tree while the
  // host converts the disk: they start once it is frozen; else once the appliance has stopped.
  // The outputs made from the archive start once it is written, beside the shutdown.
  const overlap = fromArchive.length > 0 && conversions.length > 0
  const after = overlap ? freezeImageStep.name : shutdown.name
  return [
    ...steps,
    ...(overlap ? [freezeImageStep] : []),
    ...(fromArchive.length > 0 ? [treeArchive] : []),
    shutdown,
    ...fromArchive.map((f) => (f.isArchive ? tarStep(f) : archiveFormatStep(f))),
    ...conversions.map((f) => diskFormatStep(f, after)),
    ...(plan.checksum ? [checksums] : []),
  ]
}
