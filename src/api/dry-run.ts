// --dry-run: what a build would do, without launching anything: the expanded elements and where
// each came from, every phase with its scripts in run order, skipped files and why, the
// variables of each phase and the environment.d files sourced (listed, not run).
import { fstabText } from '../blockdev/script.js'
import { phaseEnvironment, type EnvSource, type Where } from '../elements/environment.js'
import { listEnvironmentFiles, listPhaseScripts, type SkipReason } from '../elements/hooks.js'
import { PHASES } from '../phases/registry.js'
import { forecastCache } from '../engine/cache-run.js'
import { cacheBoundaries } from '../engine/layer.js'
import type { StepInfo, StepPart } from '../engine/pipeline.js'
import type { BuildPlan } from '../engine/plan.js'
import { planSteps } from '../engine/steps.js'

export interface DryRunReport {
  elements: { name: string; path: string; reason: string }[]
  provided: Record<string, string>
  excluded: string[]
  overrides: { name: string; used: string; ignored: string }[]
  environmentFiles: { name: string; element: string | undefined }[]
  phases: {
    hook: string
    where: Where
    scripts: { name: string; element: string | undefined }[]
    skipped: { name: string; element: string | undefined; reason: SkipReason }[]
    environment: { name: string; value: string; source: EnvSource }[]
  }[]
  outputs: string[]
  ramdisk: boolean
  /**
   * The steps the build runs, in the order their `step` events come: what each belongs to, the
   * plan fields it depends on, and for a step that runs beside others, the step it starts after.
   */
  steps: { name: string; part: StepPart; reads: string[]; startsAfter?: string }[]
  /**
   * With --cache: the snapshots this build would store (after which step, each cached or not),
   * what it would reuse, and why the first missing one misses. `steps` is then the cached table.
   */
  cache?: {
    dir: string
    snapshots: { phase: string; key: string; cached: boolean }[]
    reuse: string[]
    miss: { step: string; reason: string } | undefined
  }
  /** The block-device layout that would be made on the --size disk. */
  blockDevice: {
    origin: string
    partitions: { table: string; name: string; number: number; start: number; sectors: number; type: string }[]
    filesystems: { name: string; type: string; label: string; on: string; mountPoint?: string }[]
    fstab: string
    /** Built straight on the layout (one POSIX file system at /), or apart and copied on. */
    buildInPlace: boolean
  }
  warnings: string[]
}

function listSteps(steps: readonly StepInfo[]): DryRunReport['steps'] {
  return steps.map((s) => ({
    name: s.name,
    part: s.part,
    reads: [...s.reads],
    ...(s.startsAfter !== undefined ? { startsAfter: s.startsAfter } : {}),
  }))
}

export function describePlan(plan: BuildPlan): DryRunReport {
  const warnings = new Set(plan.warnings)
  const phases = PHASES.map((p) => {
    const { scripts, skipped } = listPhaseScripts(plan.hooks, p.hook)
    const { vars, warnings: w } = phaseEnvironment(
      { ...plan.envInputs, ...(p.where === 'host' ? { hostMount: '<image mount>' } : {}) },
      p,
    )
    w.forEach((x) => warnings.add(x))
    return { hook: p.hook, where: p.where, scripts, skipped, environment: vars }
  })
  return {
    elements: plan.resolution.elements.map((e) => ({
      name: e.name,
      path: e.dir,
      reason:
        e.reason.kind === 'dependency'
          ? `dependency of ${e.reason.of}`
          : e.reason.kind === 'implicit'
            ? `implicit (${e.reason.why})`
            : 'requested',
    })),
    provided: Object.fromEntries(plan.resolution.provided),
    excluded: plan.resolution.excluded,
    overrides: plan.index.overrides,
    environmentFiles: listEnvironmentFiles(plan.hooks),
    phases,
    outputs: plan.ramdisk
      ? [`${plan.outputPath}.d`]
      : plan.formats.map((f) => f.describeTarget(plan.outputPath, plan.outputSettings)),
    ramdisk: plan.ramdisk,
    steps: listSteps(planSteps(plan)),
    blockDevice: {
      origin: plan.layout.origin,
      partitions: plan.layout.tables.flatMap((t) =>
        t.partitions.map((p) => ({
          table: t.label,
          name: p.name,
          number: p.number,
          start: p.startSector,
          sectors: p.sizeSectors,
          type: p.type,
        })),
      ),
      filesystems: plan.layout.filesystems.map((f) => {
        const m = plan.layout.mounts.find((x) => x.base === f.name)
        return { name: f.name, type: f.type, label: f.label, on: f.base, ...(m ? { mountPoint: m.mountPoint } : {}) }
      }),
      fstab: fstabText(plan.layout),
      buildInPlace: plan.buildInPlace,
    },
    warnings: [...warnings],
  }
}

const REASONS: Record<SkipReason, string> = {
  'bad-name': 'name does not match ^[0-9A-Za-z_-]+$',
  'not-executable': 'not executable',
  'not-a-file': 'not a regular file (or a broken symlink)',
  excluded: 'excluded by --exclude-script',
}

/**
 * describePlan, and with the step cache on what the cache holds for this plan: the steps listed
 * are then the ones the build would run (restored steps left out, snapshots in). Looks, creates nothing.
 */
export async function describePlanWithCache(plan: BuildPlan): Promise<DryRunReport> {
  const report = describePlan(plan)
  if (!plan.cache) return report
  const f = await forecastCache(plan, planSteps(plan), await cacheBoundaries(plan))
  const reuse = f.resume ? f.all.slice(0, f.all.indexOf(f.resume) + 1).map((b) => b.phase) : []
  return {
    ...report,
    steps: listSteps(planSteps(plan, { boundaries: f.all, resume: f.resume })),
    cache: { dir: f.dir, snapshots: [...f.boundaries], reuse, miss: f.miss },
  }
}

export function formatDryRun(r: DryRunReport): string {
  const out: string[] = []
  out.push('Elements:')
  for (const e of r.elements) out.push(`  ${e.name.padEnd(28)} ${e.path}  [${e.reason}]`)
  for (const [v, p] of Object.entries(r.provided)) out.push(`  (${v} provided by ${p})`)
  for (const x of r.excluded) out.push(`  (${x} excluded)`)
  for (const o of r.overrides) out.push(`  (${o.name}: ${o.used} overrides ${o.ignored})`)
  out.push('', 'environment.d files, sourced before every phase in this order:')
  for (const f of r.environmentFiles) out.push(`  ${f.name}  (${f.element ?? 'virt-dib'})`)
  for (const p of r.phases) {
    out.push(
      '',
      `${p.hook} (${p.where === 'chroot' ? 'in the image chroot' : p.where === 'host' ? 'on the host' : 'in the appliance, outside the chroot'}):`,
    )
    if (p.scripts.length === 0) out.push('  (no scripts)')
    for (const s of p.scripts) out.push(`  ${s.name.padEnd(36)} ${s.element ?? ''}`)
    for (const s of p.skipped) out.push(`  skipped ${s.name} (${s.element ?? ''}): ${REASONS[s.reason]}`)
    out.push('  environment:')
    for (const v of p.environment)
      out.push(`    ${v.name}=${JSON.stringify(v.value)}${v.source === 'virt-dib' ? '' : `  [${v.source}]`}`)
  }
  const how = r.blockDevice.buildInPlace ? 'tree built in place' : 'tree built apart, copied on after block-device.d'
  out.push('', `Block device (${r.blockDevice.origin}; ${how}):`)
  for (const p of r.blockDevice.partitions) {
    out.push(`  ${p.table} partition ${p.number} ${p.name}: start ${p.start}, ${p.sectors} sectors, type ${p.type}`)
  }
  for (const f of r.blockDevice.filesystems) {
    out.push(`  ${f.type} ‘${f.label}’ on ${f.on}${f.mountPoint ? ` mounted at ${f.mountPoint}` : ''}`)
  }
  out.push('', `Outputs${r.ramdisk ? ' (ramdisk build)' : ''}:`)
  for (const o of r.outputs) out.push(`  ${o}`)
  if (r.cache) {
    out.push('', `Step cache (${r.cache.dir}):`)
    for (const c of r.cache.snapshots)
      out.push(`  ${c.phase.padEnd(16)} ${c.key.slice(0, 12)}  ${c.cached ? 'cached' : '-'}`)
    if (r.cache.reuse.length > 0) out.push(`  reuses ${r.cache.reuse[0]} … ${r.cache.reuse.at(-1)}`)
    if (r.cache.miss) out.push(`  not in the cache: ${r.cache.miss.step} (${r.cache.miss.reason})`)
  }
  out.push('', 'Steps, in order:')
  for (const s of r.steps)
    out.push(
      `  ${s.name}${s.startsAfter !== undefined ? `  (starts after ${s.startsAfter}, runs beside the steps between)` : ''}`,
    )
  for (const w of r.warnings) out.push(`warning: ${w}`)
  return out.join('\n') + '\n'
}
