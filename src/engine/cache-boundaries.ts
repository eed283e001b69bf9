// Where a build's step-cache snapshots go and under which keys: after every cached phase that runs
// a script and after the block-device step, each with the drives that hold the build then. The
// keys themselves are src/cache/keys.ts's; this adds what only the engine knows (the appliance,
// virt-dib's guest-side files, the table).
import { DIB_BLOCK_DEVICE_SCRIPT } from '../blockdev/getval.js'
import { hashContents, hashTree, PHASE_STEP_NAMES, stepKeys, type StepKey, type StepKeyOptions } from '../cache/keys.js'
import { listPhaseScripts } from '../elements/hooks.js'
import { Guestfs } from '../guestfs/index.js'
import { applianceCacheKey } from '../host/appliance.js'
import { extraPackages, extraPackagesScript } from '../phases/extra-packages.js'
import { PHASE_BY_HOOK } from '../phases/registry.js'
import { formatControlFile, type ControlOptions } from '../phases/runner/control-file.js'
import { FAKE_AWK, FAKE_SUDO, RUNNER_SCRIPT } from '../phases/runner/runner-script.js'
import { AUX_IMAGE_SIZE, TREE_DISK_SIZE, TREE_MKFS } from './appliance.js'
import type { StepInfo } from './pipeline.js'
import type { BuildPlan } from './plan.js'

/** A live drive whose content a snapshot keeps. */
export type DriveName = 'tree' | 'disk' | 'aux'

/** A point of the table after which the build's state is stored. */
export interface Boundary {
  /** The table step it follows (the last step of its phase). */
  readonly after: string
  /** The phase it is stored as: a hook (`install.d`) or `block-device`. */
  readonly phase: string
  readonly key: string
  /** Hashes of what the key was made of, by input name (for the reason of a miss). */
  readonly inputs: Readonly<Record<string, string>>
  /** The drives holding the build then: the tree until the block-device step, the image's disk after. */
  readonly drives: readonly DriveName[]
  /** A batch layer's boundary that is its base's (the base's name): restored, never stored by the layer. */
  readonly base?: string
}

/** The hook folders of the phases after `phase` (a boundary's), in run order. */
export function hooksAfter(phase: string): string[] {
  const at = PHASE_STEP_NAMES.indexOf(phase)
  return PHASE_STEP_NAMES.slice(at + 1).filter((p) => p.endsWith('.d'))
}

/** A control file of every feature, whose text stands for the format in the keys. */
const SAMPLE_CONTROL: ControlOptions = {
  hook: 'install.d',
  hooksDir: '/hooks',
  console: '/dev/console',
  cwd: '/',
  exclude: ['x'],
  trace: true,
  extraEnv: '/extra.env',
  vars: [{ name: 'V', value: "a 'b'", source: 'virt-dib' }],
  elementArray: '[e]=/e ',
  scriptsDir: '/scripts',
  where: 'chroot',
}

/** What the keys need besides the plan: the appliance, the lib folder, virt-dib's guest-side files. */
export async function keyOptions(plan: BuildPlan): Promise<StepKeyOptions> {
  // A handle that is never launched: only where libguestfs's appliance is (LIBGUESTFS_PATH…).
  const g = await Guestfs.create({ program: 'virt-dib' })
  let stockPath: string
  try {
    stockPath = await g.getPath()
  } finally {
    await g.close()
  }
  return {
    applianceKey: applianceCacheKey({
      stockPath,
      extraPackages: plan.appliance.packages,
      stock: plan.appliance.stock,
    }),
    libHash: hashTree(plan.libPath),
    guestFilesHash: hashContents({
      runner: RUNNER_SCRIPT,
      sudo: FAKE_SUDO,
      awk: FAKE_AWK,
      'dib-block-device': DIB_BLOCK_DEVICE_SCRIPT,
      // The template only: the packages are extra-packages' own input.
      'extra-packages': extraPackagesScript([]).content,
      // How the tree's drive is made.
      'tree-drive': `${TREE_DISK_SIZE} ${AUX_IMAGE_SIZE} ${TREE_MKFS}`,
      // What the runners are told and how: a change of the control file's format changes what scripts see.
      'control-file': formatControlFile(SAMPLE_CONTROL),
    }),
    phaseFacts: (hook) => PHASE_BY_HOOK.get(hook) ?? (hook === extraPackages.hook ? extraPackages : undefined),
  }
}

/**
 * The boundaries of `table` (the plan's steps without the cache): after every cached phase that
 * runs a script, and after the block-device step. A phase without scripts changes nothing a
 * snapshot would keep: its key still chains into the next one. `keys`: a batch layer's (layer.ts).
 */
export function planBoundaries(
  plan: BuildPlan,
  table: readonly StepInfo[],
  o: StepKeyOptions,
  keys: readonly StepKey[] = stepKeys(plan, table, o),
): Boundary[] {
  const names = table.map((s) => s.name)
  const layoutAt = names.indexOf('block-device')
  return keys
    .filter((k) => k.boundary && runsScripts(plan, table, k.step))
    .map((k) => ({
      after: k.step,
      phase: phaseOfStep(table, k.step),
      key: k.key,
      inputs: k.inputs,
      drives:
        names.indexOf(k.step) >= layoutAt && layoutAt >= 0 ? (['disk', 'aux'] as const) : (['tree', 'aux'] as const),
    }))
}

/** The phase a step belongs to (extra-data-unmount is extra-data.d's), or the engine step's name. */
function phaseOfStep(table: readonly StepInfo[], name: string): string {
  const part = table.find((s) => s.name === name)!.part
  return part.kind === 'phase' ? part.hook : name
}

function runsScripts(plan: BuildPlan, table: readonly StepInfo[], name: string): boolean {
  const phase = phaseOfStep(table, name)
  if (phase === 'block-device' || phase === extraPackages.hook) return true
  return listPhaseScripts(plan.hooks, phase).scripts.length > 0
}

/** --rebuild-from: the boundaries of that phase and after it are not looked up. */
export function isRebuilt(plan: BuildPlan, b: Boundary): boolean {
  if (plan.rebuildFrom === undefined) return false
  const at = PHASE_STEP_NAMES.indexOf(plan.rebuildFrom)
  return at >= 0 && PHASE_STEP_NAMES.indexOf(b.phase) >= at
}
