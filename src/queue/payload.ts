// A job's payload: one batch entry (a layer's with its base's), in the batch file's own terms, so
// that a worker validates it with the same schema as `virt-dib batch` (src/batch/batch-file.ts).
import type { BuildOptions } from '../api/options.js'
import { BatchFileError, parseBatch, type BatchBuild, type BatchSpec } from '../batch/batch-file.js'
import type { ManyBuild } from '../batch/types.js'

/** A batch file entry: BuildOptions keys as the file writes them, paths absolute. */
export type BatchEntry = Record<string, unknown>

export interface JobPayload {
  /** The payload's format. */
  v: 1
  /** The build's label (its name in the batch file): progress lines and the summary use it. */
  label: string
  build: BatchEntry
  /** A layer's base, whole: any worker can build it or reuse its snapshots. */
  base?: { label: string; build: BatchEntry }
}

/** What a build's options are in the batch file: options the file cannot set are left out. */
function toEntry(options: BuildOptions): BatchEntry {
  const entry: BatchEntry = {}
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || key === 'env' || key === 'cache' || key === 'argv') continue
    entry[key] =
      key === 'envvars'
        ? (value as NonNullable<BuildOptions['envvars']>).map((e) =>
            e.value === undefined ? e.name : `${e.name}=${e.value}`,
          )
        : value
  }
  return entry
}

/** The payload of one build of a checked batch (a layer's carries its base's). */
export function toPayload(spec: BatchSpec, build: BatchBuild): JobPayload {
  const payload: JobPayload = { v: 1, label: build.name, build: toEntry(build.options) }
  if (build.base !== undefined) {
    const base = spec.builds.find((b) => b.name === build.base)
    if (base === undefined) throw new Error(`internal error: no base ${build.base} in the batch`)
    // A layer over a layer: its base travels as one flat build (its options are already the chain's).
    payload.base = { label: base.name, build: toEntry(base.options) }
  }
  return payload
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * The builds a payload asks for (the base first), checked with the batch file's schema. Throws a
 * {@link BatchFileError} naming the job (`job build-…: builds[1].fromats: unknown key`).
 */
export function parsePayload(data: unknown, source: string): ManyBuild[] {
  const bad = (problem: string): never => {
    throw new BatchFileError(source, [problem])
  }
  if (!isMap(data)) return bad('the payload is not a map')
  if (data['v'] !== 1) return bad(`unknown payload version ${JSON.stringify(data['v'])} (this worker reads 1)`)
  const label = data['label']
  if (typeof label !== 'string' || label === '') return bad('the payload has no label')
  if (!isMap(data['build'])) return bad('the payload has no build')
  const base = data['base']
  if (base !== undefined && (!isMap(base) || !isMap(base['build']) || typeof base['label'] !== 'string')) {
    return bad('the payload’s base is not a labelled build')
  }
  const entries: BatchEntry[] = []
  const labels: string[] = []
  if (isMap(base)) {
    entries.push(base['build'] as BatchEntry)
    labels.push(base['label'] as string)
  }
  entries.push(isMap(base) ? { ...data['build'], base: (base['build'] as BatchEntry)['name'] } : data['build'])
  labels.push(label)
  // Paths are absolute in a payload: '/' only resolves those that are not (the allowed-folder check refuses them).
  const spec = parseBatch(JSON.stringify({ builds: entries }), '/', source)
  if (spec.builds.length !== entries.length) return bad('the payload does not hold one build (and its base)')
  if (labels[0] === labels[1]) return bad('a layer and its base have the same label')
  const byName = new Map(spec.builds.map((b, i) => [b.name, labels[i]!]))
  return spec.builds.map((b) => ({
    name: byName.get(b.name)!,
    ...(b.base !== undefined ? { base: byName.get(b.base)! } : {}),
    options: b.options,
  }))
}

export { BatchFileError }
