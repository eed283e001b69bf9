// A batch layer's plan: the request planned as a flat build, then where it stops sharing its
// base's steps (src/engine/layer.ts), then planned again as a layer starting there.
import { layerStart } from '../engine/layer.js'
import type { BuildPlan } from '../engine/plan.js'
import type { BuildOptions } from './options.js'
import { planBuild } from './plan.js'

/**
 * Plans `options` (the base's elements and the layer's own) as a layer over `base`. Without the
 * step cache on both, or when even the first step differs, the layer is a flat build (`from` undefined).
 */
export async function planLayer(options: BuildOptions, o: { base: BuildPlan; baseName: string }): Promise<BuildPlan> {
  // Compared with the base's file systems (a layout holds its UUID): planned as if it started last.
  const probe = planBuild(options, { layer: { ...o, from: 'cleanup.d' } })
  const shared = probe.cache !== undefined && o.base.cache !== undefined && probe.cache.dir === o.base.cache.dir
  const from = shared ? await layerStart(probe, o.base) : undefined
  return planBuild(options, { layer: { base: o.base, baseName: o.baseName, from } })
}
