// Planning a batch's builds as a whole: outputs that two builds would both write, bases that
// name nothing or go round in a cycle, and the order that puts every base before its layers.
import { resolve } from 'node:path'

import { didYouMean } from './did-you-mean.js'

/** What the planning checks need of one build (its options already resolved). */
export interface BuildNode {
  /** Position in the file's `builds:` list. */
  index: number
  /** The `name` as written: the build's label, and what a `base:` names. */
  name: string
  /** The resolved output path (BuildOptions.name). */
  outputPath: string
  /** The `base:` as written. */
  base?: string
  /** Everything the build writes besides `outputPath` (files, `docker:` targets). */
  outputs: readonly string[]
}

export interface BuildGraph {
  /** The base of each build, as the name of the build it resolved to (absent for a plain build). */
  bases: ReadonlyMap<number, string>
  /** One line per problem, in file order. */
  problems: string[]
}

const label = (n: BuildNode) => `builds[${n.index}] ‘${n.name}’`

/**
 * Every planning problem of the builds: two writing the same output, an unknown base, a build
 * on itself, a cycle of bases. `baseDir` resolves a `base:` written as a path (`./debian`).
 */
export function checkBuildGraph(nodes: readonly BuildNode[], baseDir: string): BuildGraph {
  const problems: string[] = []
  checkOutputs(nodes, problems)

  const byName = new Map<string, BuildNode>()
  const byPath = new Map<string, BuildNode>()
  for (const n of nodes) {
    if (!byName.has(n.name)) byName.set(n.name, n)
    if (!byPath.has(n.outputPath)) byPath.set(n.outputPath, n)
  }
  const baseOf = new Map<number, BuildNode>()
  for (const n of nodes) {
    if (n.base === undefined) continue
    const b = byName.get(n.base) ?? byPath.get(resolve(baseDir, n.base))
    if (b === undefined) {
      problems.push(`builds[${n.index}].base: no build is named ‘${n.base}’${didYouMean(n.base, byName.keys())}`)
    } else if (b === n) {
      problems.push(`builds[${n.index}].base: ‘${n.base}’ is this build itself`)
    } else {
      baseOf.set(n.index, b)
    }
  }
  problems.push(...findCycles(nodes, baseOf))
  return { bases: new Map([...baseOf].map(([i, b]) => [i, b.name])), problems }
}

function checkOutputs(nodes: readonly BuildNode[], problems: string[]): void {
  const byPath = new Map<string, BuildNode>()
  const byOutput = new Map<string, BuildNode>()
  for (const n of nodes) {
    const first = byPath.get(n.outputPath)
    if (first !== undefined) {
      problems.push(`${label(first)} and ${label(n)} both write ${n.outputPath}`)
      continue
    }
    byPath.set(n.outputPath, n)
    // Different names can still meet in one docker target (or in one file, were an extension to have a dot).
    for (const o of new Set(n.outputs)) {
      const other = byOutput.get(o)
      if (other !== undefined) problems.push(`${label(other)} and ${label(n)} both write ${o}`)
      else byOutput.set(o, n)
    }
  }
}

/** One line per cycle of bases (a build on itself is reported apart), from its earliest build. */
function findCycles(nodes: readonly BuildNode[], baseOf: ReadonlyMap<number, BuildNode>): string[] {
  const out: string[] = []
  const done = new Set<number>()
  for (const start of nodes) {
    // Each build has at most one base: follow the chain until it ends, meets a checked build or loops.
    const chain: BuildNode[] = []
    const onChain = new Set<number>()
    let n: BuildNode | undefined = start
    while (n !== undefined && !done.has(n.index) && !onChain.has(n.index)) {
      chain.push(n)
      onChain.add(n.index)
      n = baseOf.get(n.index)
    }
    if (n !== undefined && onChain.has(n.index)) {
      const cycle = chain.slice(chain.indexOf(n))
      const first = cycle.reduce((a, b) => (b.index < a.index ? b : a))
      const ordered = [...cycle.slice(cycle.indexOf(first)), ...cycle.slice(0, cycle.indexOf(first))]
      const pairs = ordered.map((c) => `${c.name} on ${baseOf.get(c.index)!.name}`)
      const indices = ordered.map((c) => c.index).sort((a, b) => a - b)
      out.push(`${indices.map((i) => `builds[${i}]`).join(', ')}: a cycle of bases (${pairs.join(', ')})`)
    }
    for (const c of chain) done.add(c.index)
  }
  return out
}

/**
 * The builds in an order where each base comes before its layers, otherwise in file order: at each
 * step the earliest build whose base is already placed. Needs a graph without problems.
 */
export function orderBuilds<T extends { index: number; name: string; base?: string }>(builds: readonly T[]): T[] {
  const placed = new Set<string>()
  const left = [...builds]
  const out: T[] = []
  while (left.length > 0) {
    const i = left.findIndex((b) => b.base === undefined || placed.has(b.base))
    // A bug, not a user error: checkBuildGraph refuses unknown bases and cycles first.
    if (i === -1) throw new Error('orderBuilds: a base is missing or the bases form a cycle')
    const [b] = left.splice(i, 1)
    out.push(b!)
    placed.add(b!.name)
  }
  return out
}
