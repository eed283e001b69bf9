// The batch file (`virt-dib batch FILE`): YAML or JSON with `defaults:` and `builds:`, checked
// whole before anything starts, so that a typo in the fifth build fails at once, not after an hour.
import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

import { parseDocument } from 'yaml'

import type { BuildOptions } from '../api/options.js'
import { DEFAULT_FORMATS } from '../api/options.js'
import { parseEnvvar, type EnvvarSpec } from '../elements/environment.js'
import { VirtDibError } from '../errors.js'
import { OUTPUT_FORMAT_NAMES, OUTPUT_FORMATS, isFormatName } from '../outputs/registry.js'
import { parseSize } from '../util/sizes.js'
import { didYouMean } from './did-you-mean.js'
import { checkBuildGraph, orderBuilds, type BuildNode } from './graph.js'

/**
 * A batch file's problems, every one found (a batch is fixed in one go, not one error per run).
 * Each problem says where (`builds[2].fromats: unknown key (did you mean formats?)`); the message
 * is one line per problem, each prefixed with the file.
 */
export class BatchFileError extends VirtDibError {
  override name = 'BatchFileError'
  readonly source: string
  readonly problems: readonly string[]

  constructor(source: string, problems: readonly string[]) {
    super(problems.map((p) => `${source}: ${p}`).join('\n'))
    this.source = source
    this.problems = problems
  }
}

/**
 * One build of a batch, ready for build(): the file's entry over its `defaults`, paths made
 * absolute. `name` is the entry's name as written, which labels its progress and which `base:`
 * refers to; `options.name` is the resolved output path.
 */
export interface BatchBuild {
  /** Position in the file's `builds:` list (what the file's error messages call it). */
  index: number
  name: string
  /** The build this one is a layer over (that build's `name`); it comes earlier in {@link BatchSpec.builds}. */
  base?: string
  options: BuildOptions
}

/** A checked batch: its builds with every base before its layers, otherwise in file order. */
export interface BatchSpec {
  /** Where the batch came from (the path as given), for messages. */
  source: string
  builds: BatchBuild[]
}

/** What each value is in the file; a {@link Kind} only fits fields of its type (see {@link KindFor}). */
type Kind =
  | 'boolean'
  | 'string'
  | 'strings'
  | 'count'
  | 'level'
  | 'size'
  | 'name'
  | 'path'
  | 'paths'
  | 'formats'
  | 'envvars'
  | 'driveFormat'

type KindFor<T> = [T] extends [boolean | undefined]
  ? 'boolean'
  : [T] extends [number | undefined]
    ? 'count' | 'level' | 'size'
    : [T] extends ['raw' | 'qcow2' | undefined]
      ? 'driveFormat'
      : [T] extends [string | undefined]
        ? 'string' | 'name' | 'path'
        : [T] extends [EnvvarSpec[] | undefined]
          ? 'envvars'
          : [T] extends [string[] | undefined]
            ? 'strings' | 'paths' | 'formats'
            : never

/**
 * BuildOptions fields a file does not set: the process environment, the step cache (the batch
 * command's, for all builds at once), DIB_ARGS (the batch sets it).
 */
type NotInFile = 'env' | 'cache' | 'argv'
type FileKey = Exclude<keyof BuildOptions, NotInFile>

/**
 * Every other BuildOptions field, with what it is in the file. Complete by type: a new field of
 * BuildOptions (or of an output format) fails to compile here until it is listed, or added to NotInFile.
 */
const FIELDS: { readonly [K in FileKey]-?: KindFor<BuildOptions[K]> } = {
  elements: 'strings',
  libPath: 'path',
  elementPaths: 'paths',
  excludeElements: 'strings',
  excludeScripts: 'strings',
  envvars: 'envvars',
  skipBase: 'boolean',
  rootLabel: 'string',
  installType: 'string',
  imageCache: 'path',
  mkfsOptions: 'string',
  extraPackages: 'strings',
  checksum: 'boolean',
  python: 'string',
  ramdisk: 'boolean',
  ramdiskElement: 'string',
  name: 'name',
  fsType: 'string',
  size: 'size',
  formats: 'formats',
  arch: 'string',
  drive: 'path',
  driveFormat: 'driveFormat',
  memsize: 'count',
  smp: 'count',
  network: 'boolean',
  deleteOnFailure: 'boolean',
  debug: 'level',
  verbose: 'boolean',
  trace: 'boolean',
  appliancePackages: 'strings',
  stockAppliance: 'boolean',
  rebuildFrom: 'string',
  sourceDateEpoch: 'level',
  compress: 'boolean',
  qemuImgOptions: 'string',
  dockerTarget: 'string',
}

const FIELD_NAMES = Object.keys(FIELDS) as FileKey[]
/** The batch-only key of a build. */
const BASE = 'base'
const BUILD_KEYS = [...FIELD_NAMES, BASE]
const TOP_KEYS = ['defaults', 'builds']
const REQUIRED = ['elements', 'libPath', 'elementPaths'] as const

const INVALID = Symbol('invalid')
type Parsed = unknown

/** A value as a message quotes it. */
function show(v: unknown): string {
  return typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v))
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Checks one value against its kind: the value for BuildOptions, or INVALID with a problem recorded. */
function parseValue(kind: Kind, v: unknown, at: string, baseDir: string, problems: string[]): Parsed {
  const bad = (what: string): typeof INVALID => {
    problems.push(`${at}: ${what}`)
    return INVALID
  }
  const strings = (): string[] | typeof INVALID =>
    Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : bad('expected a list of strings')
  switch (kind) {
    case 'boolean':
      return typeof v === 'boolean' ? v : bad('expected true or false')
    case 'string':
      return typeof v === 'string' ? v : bad('expected a string')
    case 'strings':
      return strings()
    case 'count':
      return Number.isSafeInteger(v) && (v as number) > 0 ? v : bad('expected a whole number greater than zero')
    case 'level':
      return Number.isSafeInteger(v) && (v as number) >= 0 ? v : bad('expected a whole number, 0 or more')
    case 'size': {
      const n = typeof v === 'string' ? parseSize(v) : v
      return Number.isSafeInteger(n) && (n as number) > 0 ? n : bad(`not a size: ${show(v)}`)
    }
    case 'name':
      if (typeof v !== 'string' || v === '') return bad('expected a file name')
      // planBuild refuses such a name; resolving it would hide the slash.
      if (v.endsWith('/')) return bad(`not a file name: ${v}`)
      return resolve(baseDir, v)
    case 'path':
      return typeof v === 'string' && v !== '' ? resolve(baseDir, v) : bad('expected a path')
    case 'paths': {
      const list = strings()
      if (list === INVALID) return INVALID
      return list.every((p) => p !== '') ? list.map((p) => resolve(baseDir, p)) : bad('expected a list of paths')
    }
    case 'formats':
      return parseFormats(v, at, problems)
    case 'envvars':
      return parseEnvvars(v, at, problems)
    case 'driveFormat':
      return v === 'raw' || v === 'qcow2' ? v : bad('expected raw or qcow2')
  }
}

function parseFormats(v: unknown, at: string, problems: string[]): Parsed {
  if (!Array.isArray(v)) {
    problems.push(`${at}: expected a list of output formats`)
    return INVALID
  }
  if (v.length === 0) {
    problems.push(`${at}: the list of output formats cannot be empty`)
    return INVALID
  }
  const out: string[] = []
  let ok = true
  v.forEach((f: unknown, i) => {
    if (typeof f === 'string' && isFormatName(f)) {
      if (!out.includes(f)) out.push(f)
      return
    }
    ok = false
    const hint =
      typeof f === 'string' ? didYouMean(f, OUTPUT_FORMAT_NAMES) || ` (one of ${OUTPUT_FORMAT_NAMES.join(', ')})` : ''
    problems.push(`${at}[${i}]: unknown output format ‘${show(f)}’${hint}`)
  })
  return ok ? out : INVALID
}

function parseEnvvars(v: unknown, at: string, problems: string[]): Parsed {
  if (!Array.isArray(v)) {
    problems.push(`${at}: expected a list of strings (NAME or NAME=value)`)
    return INVALID
  }
  const out: EnvvarSpec[] = []
  let ok = true
  v.forEach((e: unknown, i) => {
    if (typeof e !== 'string') {
      ok = false
      problems.push(`${at}[${i}]: expected NAME or NAME=value`)
      return
    }
    try {
      out.push(parseEnvvar(e))
    } catch {
      ok = false
      problems.push(`${at}[${i}]: invalid variable name ‘${e.split('=')[0]}’`)
    }
  })
  return ok ? out : INVALID
}

/** One map's fields checked: the valid ones, and the keys given (valid or not). */
interface Entry {
  values: Partial<Record<FileKey, unknown>>
  given: Set<string>
  base?: string
}

function parseEntry(map: Record<string, unknown>, at: string, isBuild: boolean, baseDir: string, problems: string[]) {
  const entry: Entry = { values: {}, given: new Set() }
  for (const [key, v] of Object.entries(map)) {
    entry.given.add(key)
    const where = `${at}.${key}`
    if (key === BASE || key === 'name') {
      if (!isBuild) {
        problems.push(`${where}: only a build can have a ${key}`)
        continue
      }
      if (key === BASE) {
        if (typeof v === 'string' && v !== '') entry.base = v
        else problems.push(`${where}: expected the name of another build`)
        continue
      }
    }
    if (!Object.hasOwn(FIELDS, key)) {
      problems.push(`${where}: unknown key${didYouMean(key, isBuild ? BUILD_KEYS : FIELD_NAMES)}`)
      continue
    }
    const field = key as FileKey
    const value = parseValue(FIELDS[field], v, where, baseDir, problems)
    if (value !== INVALID) entry.values[field] = value
  }
  return entry
}

/** Everything a build writes besides its output path, for the planning checks. */
function outputsOf(o: Partial<BuildOptions> & { name: string }): string[] {
  if (o.ramdisk) return [`${o.name}.d`]
  return (o.formats ?? DEFAULT_FORMATS).flatMap((f) => {
    const ext = OUTPUT_FORMATS.get(f)?.extension
    if (ext !== undefined) return [`${o.name}.${ext}`]
    // docker without a target: planBuild says so.
    return o.dockerTarget ? [`docker:${o.dockerTarget}`] : []
  })
}

/**
 * A batch from its text (YAML, or JSON), relative paths against `baseDir`; `source` names the file
 * in messages. Throws a {@link BatchFileError} listing every problem found.
 */
export function parseBatch(text: string, baseDir: string, source: string): BatchSpec {
  const problems: string[] = []
  const fail = (): never => {
    throw new BatchFileError(source, problems)
  }
  const doc = parseDocument(text, { prettyErrors: true })
  for (const e of [...doc.errors, ...doc.warnings]) problems.push(`not valid YAML: ${firstLine(e.message)}`)
  if (problems.length > 0) fail()
  const top: unknown = doc.toJS()

  if (!isMap(top)) {
    problems.push('expected a map with defaults: and builds:')
    return fail()
  }
  for (const key of Object.keys(top)) {
    if (!TOP_KEYS.includes(key)) problems.push(`${key}: unknown key${didYouMean(key, TOP_KEYS)}`)
  }
  const rawDefaults = top['defaults'] ?? {}
  let defaults: Entry = { values: {}, given: new Set() }
  if (isMap(rawDefaults)) defaults = parseEntry(rawDefaults, 'defaults', false, baseDir, problems)
  else problems.push('defaults: expected a map')

  const rawBuilds = top['builds']
  if (rawBuilds === undefined) problems.push('builds: missing')
  else if (!Array.isArray(rawBuilds) || rawBuilds.length === 0) problems.push('builds: expected a non-empty list')
  const list: unknown[] = Array.isArray(rawBuilds) ? rawBuilds : []

  // Every build with a usable name is planned, complete or not: its layers then name something.
  const nodes: BuildNode[] = []
  const builds: BatchBuild[] = []
  const layerOwn = new Map<number, Partial<Record<FileKey, unknown>>>()
  list.forEach((raw, index) => {
    const at = `builds[${index}]`
    if (!isMap(raw)) {
      problems.push(`${at}: expected a map`)
      return
    }
    const own = parseEntry(raw, at, true, baseDir, problems)
    const written = raw['name']
    if (written === undefined) problems.push(`${at}: no name`)
    let complete = true
    // A layer has its base's: that one is checked.
    for (const key of own.base === undefined ? REQUIRED : []) {
      if (own.values[key] !== undefined || defaults.values[key] !== undefined) continue
      complete = false
      // An invalid value is reported already.
      if (!own.given.has(key) && !defaults.given.has(key)) {
        problems.push(`${at}.${key}: missing (neither in the build nor in defaults)`)
      }
    }
    if (typeof written !== 'string' || own.values.name === undefined) return
    // A list in the build replaces the default's: a plain spread.
    const options = { ...defaults.values, ...own.values } as BuildOptions & { name: string }
    const base = own.base !== undefined ? { base: own.base } : {}
    nodes.push({ index, name: written, outputPath: options.name, ...base, outputs: outputsOf(options) })
    if (complete) {
      builds.push({ index, name: written, ...base, options })
      layerOwn.set(index, own.values)
    }
  })

  const graph = checkBuildGraph(nodes, baseDir)
  problems.push(...graph.problems)
  if (problems.length > 0) fail()
  // The base as the name of the build it resolved to (`./debian` is `debian`).
  const resolved = builds.map((b) => {
    const base = graph.bases.get(b.index)
    return base === undefined ? b : { ...b, base }
  })
  return { source, builds: withBaseOptions(orderBuilds(resolved), layerOwn) }
}

/**
 * A layer's options: its base's (already resolved: bases come first), then its own keys; its
 * elements are the base's followed by its own.
 */
function withBaseOptions(
  ordered: readonly BatchBuild[],
  own: ReadonlyMap<number, Partial<Record<FileKey, unknown>>>,
): BatchBuild[] {
  const done = new Map<string, BatchBuild>()
  return ordered.map((b) => {
    const base = b.base === undefined ? undefined : done.get(b.base)
    let out = b
    if (base !== undefined) {
      const mine = (own.get(b.index) ?? {}) as Partial<BuildOptions>
      const elements = [...base.options.elements, ...(mine.elements ?? [])]
      out = { ...b, options: { ...base.options, ...mine, elements: [...new Set(elements)] } }
    }
    done.set(b.name, out)
    return out
  })
}

/** {@link parseBatch} of a file: relative paths are relative to the file's folder. */
export function loadBatchFile(path: string): BatchSpec {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new BatchFileError(path, [`cannot read the batch file: ${(e as NodeJS.ErrnoException).code ?? String(e)}`])
  }
  return parseBatch(text, dirname(resolve(path)), path)
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').replace(/:$/, '')
}
