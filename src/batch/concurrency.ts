// How many builds of a batch run at once by default: as many appliances as the free memory holds
// (each one's -m plus qemu's own), no more than the cores, at least one.
import { availableParallelism, freemem } from 'node:os'

import type { BuildPlan } from '../engine/plan.js'

/** libguestfs's appliance memory when -m is not given (`guestfish get-memsize`), in MiB. */
export const LIBGUESTFS_DEFAULT_MEMSIZE_MIB = 1280
/** What a running build takes besides the guest's RAM: qemu itself, its caches, our process's share. */
export const BUILD_OVERHEAD_MIB = 300

const MIB = 1024 * 1024

/** What the machine offers now. */
export interface HostCapacity {
  cores: number
  freeBytes: number
}

export function hostCapacity(): HostCapacity {
  return { cores: availableParallelism(), freeBytes: freemem() }
}

/**
 * The appliance memory of a plan in MiB: its -m, else LIBGUESTFS_MEMSIZE (which libguestfs reads
 * from the process's environment when the handle is made), else libguestfs's default.
 */
export function applianceMemsizeMiB(plan: Pick<BuildPlan, 'appliance'>, env: NodeJS.ProcessEnv = process.env): number {
  if (plan.appliance.memsize !== undefined) return plan.appliance.memsize
  const fromEnv = Number(env['LIBGUESTFS_MEMSIZE'])
  return Number.isSafeInteger(fromEnv) && fromEnv > 0 ? fromEnv : LIBGUESTFS_DEFAULT_MEMSIZE_MIB
}

/** The memory one running build of `plan` needs, in bytes. */
export function buildMemoryBytes(plan: Pick<BuildPlan, 'appliance'>, env: NodeJS.ProcessEnv = process.env): number {
  return (applianceMemsizeMiB(plan, env) + BUILD_OVERHEAD_MIB) * MIB
}

/**
 * min(cores, free memory / the largest build's memory, the number of builds), at least 1. The
 * largest build sets the divisor: any of them may be the ones that end up running together.
 */
export function defaultConcurrency(
  plans: readonly Pick<BuildPlan, 'appliance'>[],
  host: HostCapacity = hostCapacity(),
  env: NodeJS.ProcessEnv = process.env,
): number {
  const perBuild = Math.max(0, ...plans.map((p) => buildMemoryBytes(p, env)))
  const byMemory = perBuild > 0 ? Math.floor(host.freeBytes / perBuild) : Infinity
  const n = Math.min(Math.floor(host.cores), byMemory, Math.max(1, plans.length))
  return Number.isFinite(n) && n >= 1 ? n : 1
}
