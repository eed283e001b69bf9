// The steps of a build, in diskimage-builder's order: one row per step with what it belongs to,
// the plan fields it depends on, the state it needs and gives. planSteps() picks the rows a plan
// runs; the dry run lists exactly those, and the build runs exactly those.
import type { HookName } from '../elements/environment.js'
import { extraPackages, extraPackagesProgress, runsExtraPackages } from '../phases/extra-packages.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/runner/run-scripts.js'
import type { OutputFormat } from '../outputs/types.js'
import { addAuxDrives, launchAppliance, openAppliance, prepareBuildRoot } from './appliance.js'
import type { BuildContext } from './context.js'
import {
  diskConversions,
  exportChecksums,
  exportDiskOutput,
  exportExtraData,
  exportTarStream,
  exportTreeFormat,
  tarStreamFormats,
  treeFormats,
} from './export.js'
import { runExtraData } from './extra-data.js'
import { createBlockDevice, finalizeImage, freezeImage, releaseImage } from './image.js'
import { defineStep, type AnyStep } from './pipeline.js'
import type { BuildPlan } from './plan.js'
import { installTypeFile, prepareAuxTree } from './prepare-aux.js'

export type BuildStep = AnyStep<BuildContext>

const engine = { kind: 'engine' } as const

/** What every phase's scripts see: the hooks tree, their environment and the runner's settings. */
const PHASE_INPUTS = ['hooks', 'envInputs', 'excludeScripts', 'debug'] as const satisfies readonly (keyof BuildPlan)[]

/** A diskimage-builder phase run in the appliance (all but extra-data.d, which has its own steps). */
function phaseStep(hook: HookName): BuildStep {
  return defineStep<BuildContext>({
    name: hook,
    part: { kind: 'phase', hook },
    reads: PHASE_INPUTS,
    needs: [],
    gives: [],
    async run(ctx) {
      await runPhase(ctx, phase(hook))
      return {}
    },
  })
}

const prepareAux = defineStep<BuildContext, never, 'auxDir'>({
  name: 'prepare-aux',
  part: engine,
  reads: [
    ...PHASE_INPUTS,
    'libPath',
    'imageName',
    'appliance',
    'extraPackages',
    'layout',
    'layoutSource',
    'fsType',
    'mkfs',
    'resolution',
  ],
  needs: [],
  gives: ['auxDir'],
  run: async (ctx) => ({ auxDir: prepareAuxTree(ctx) }),
})

const appliance = defineStep<BuildContext, never, 'disk'>({
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
  gives: ['disk'],
  run: async (ctx) => ({ disk: await openAppliance(ctx) }),
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
const installType = defineStep<BuildContext>({
  name: 'install-type',
  part: engine,
  reads: ['installType'],
  needs: [],
  gives: [],
  async run(ctx) {
    const file = installTypeFile(ctx)
    await ctx.g.write(file.path, file.content)
    return {}
  },
})

const extraData = defineStep<BuildContext, never, 'extraDataView'>({
  name: 'extra-data.d',
  part: { kind: 'phase', hook: 'extra-data.d' },
  reads: [...PHASE_INPUTS, 'env', 'libPath', 'python', 'imageName', 'resolution'],
  needs: [],
  gives: ['extraDataView'],
  run: async (ctx) => ({ extraDataView: await runExtraData(ctx) }),
})

/** Releasing the FUSE view extra-data.d ran against (only when it had scripts). */
const extraDataUnmount = defineStep<BuildContext, 'extraDataView'>({
  name: 'extra-data-unmount',
  part: { kind: 'phase', hook: 'extra-data.d' },
  reads: [],
  needs: ['extraDataView'],
  gives: [],
  async run(_ctx, { extraDataView }) {
    await extraDataView?.()
    return {}
  },
})

const extraPackagesStep = defineStep<BuildContext>({
  name: 'extra-packages',
  part: { kind: 'phase', hook: 'extra-packages' },
  reads: [...PHASE_INPUTS, 'extraPackages'],
  needs: [],
  gives: [],
  async run(ctx) {
    ctx.progress(extraPackagesProgress(ctx.plan.extraPackages))
    await runPhase(ctx, extraPackages)
    return {}
  },
})

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

const extractData = defineStep<BuildContext, never, 'extraDataDir'>({
  name: 'extract-data',
  part: engine,
  reads: ['imageName', 'outputPath', 'outputDir', 'keepPartialOutputs'],
  needs: [],
  gives: ['extraDataDir'],
  run: async (ctx) => ({ extraDataDir: await exportExtraData(ctx) }),
})

const finalizeImageStep = defineStep<BuildContext>({
  name: 'finalize-image',
  part: engine,
  reads: ['appliance'],
  needs: [],
  gives: [],
  async run(ctx) {
    await finalizeImage(ctx)
    return {}
  },
})

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
] as const satisfies readonly (keyof BuildPlan)[]

const tarStream = defineStep<BuildContext>({
  name: 'tar-stream',
  part: { kind: 'output', format: 'tar-stream' },
  reads: OUTPUT_INPUTS,
  needs: [],
  gives: [],
  async run(ctx) {
    await exportTarStream(ctx)
    return {}
  },
})

function treeFormatStep(f: OutputFormat): BuildStep {
  return defineStep<BuildContext>({
    name: f.name,
    part: { kind: 'output', format: f.name },
    reads: OUTPUT_INPUTS,
    needs: [],
    gives: [],
    async run(ctx) {
      await exportTreeFormat(ctx, f)
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

function diskFormatStep(f: OutputFormat, startsAt: string | undefined): BuildStep {
  return defineStep<BuildContext, 'disk'>({
    name: f.name,
    part: { kind: 'output', format: f.name },
    reads: OUTPUT_INPUTS,
    needs: ['disk'],
    gives: [],
    ...(startsAt !== undefined ? { startsAt } : {}),
    async run(ctx, { disk }, signal) {
      await exportDiskOutput(ctx, f, disk, signal)
      return {}
    },
  })
}

const checksums = defineStep<BuildContext>({
  name: 'checksums',
  part: engine,
  reads: ['checksum', 'outputDir', 'keepPartialOutputs'],
  needs: [],
  gives: [],
  async run(ctx) {
    await exportChecksums(ctx)
    return {}
  },
})

/** The steps `plan` runs, in order. */
export function planSteps(plan: BuildPlan): BuildStep[] {
  const hasExtraData = plan.hooks.dirs.includes('extra-data.d')
  const steps: BuildStep[] = [
    prepareAux,
    appliance,
    auxImage,
    launch,
    buildRoot,
    phaseStep('root.d'),
    installType,
    extraData,
    ...(hasExtraData ? [extraDataUnmount] : []),
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
  const tree = [
    ...(tarStreamFormats(plan.formats).length > 0 ? [tarStream] : []),
    ...treeFormats(plan.formats).map(treeFormatStep),
  ]
  const conversions = diskConversions(plan.formats)
  // With both, the guest reads the frozen tree while the host converts the disk: the conversions
  // start with the first tree output; else they all start together, after the shutdown.
  const overlap = tree.length > 0 && conversions.length > 0
  const first = overlap ? tree[0]!.name : conversions[0]?.name
  return [
    ...steps,
    ...(overlap ? [freezeImageStep] : []),
    ...tree,
    shutdown,
    ...conversions.map((f, i) => diskFormatStep(f, overlap || i > 0 ? first : undefined)),
    ...(plan.checksum ? [checksums] : []),
  ]
}
