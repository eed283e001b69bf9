// CliFlags -> BuildOptions: string values become typed ones, with the original's messages.
import type { BuildOptions, OutputFormatName } from '../api/options.js'
import { parseEnvvar } from '../elements/environment.js'
import { parseDuration } from '../cache/duration.js'
import { UsageError } from '../errors.js'
import { checkFormatName } from '../outputs/registry.js'
import { parseSize } from '../util/sizes.js'
import type { CliFlags } from './flags.js'
import { GetoptError } from './parse.js'

function parseInt32(v: string): number {
  if (!/^[-+]?\d+$/.test(v.trim())) throw new GetoptError(`‘${v}’ is not a numeric value.`)
  const n = Number(v)
  if (Math.abs(n) > 2 ** 30) throw new GetoptError(`‘${v}’ is out of range.`)
  return n
}

export function parseFormats(v: string): OutputFormatName[] {
  const out: OutputFormatName[] = []
  for (const f of v.split(',').map(checkFormatName)) {
    if (!out.includes(f)) out.push(f)
  }
  return out
}

export function toBuildOptions(elements: string[], f: CliFlags, argv: string[]): BuildOptions {
  const o: BuildOptions = {
    elements,
    libPath: f.libPath ?? '',
    elementPaths: f.elementPaths,
    excludeElements: f.excludeElements,
    excludeScripts: f.excludeScripts,
    envvars: f.envvars.map(parseEnvvar),
    skipBase: f.skipBase,
    extraPackages: f.extraPackages,
    checksum: f.checksum,
    ramdisk: f.ramdisk,
    network: f.network,
    deleteOnFailure: f.deleteOnFailure,
    ...f.outputOptions,
    verbose: f.verbose,
    trace: f.trace,
    argv: ['virt-dib', ...argv],
    appliancePackages: f.appliancePackages,
  }
  if (f.debug !== undefined) {
    o.debug = parseInt32(f.debug)
    if (o.debug < 0) throw new UsageError('--debug parameter must be >= 0')
  }
  if (f.formats !== undefined) o.formats = parseFormats(f.formats)
  if (f.size !== undefined) {
    const size = parseSize(f.size)
    if (size === undefined) throw new UsageError(`${f.size}: cannot parse size field`)
    o.size = size
  }
  if (f.memsize !== undefined) o.memsize = parseInt32(f.memsize)
  if (f.smp !== undefined) o.smp = parseInt32(f.smp)
  if (f.rootLabel !== undefined) o.rootLabel = f.rootLabel
  if (f.installType !== undefined) o.installType = f.installType
  if (f.imageCache !== undefined) o.imageCache = f.imageCache
  if (f.mkfsOptions !== undefined) o.mkfsOptions = f.mkfsOptions
  if (f.python !== undefined) o.python = f.python
  if (f.ramdiskElement !== undefined) o.ramdiskElement = f.ramdiskElement
  if (f.name !== undefined) o.name = f.name
  if (f.fsType !== undefined) o.fsType = f.fsType
  if (f.arch !== undefined) o.arch = f.arch
  if (f.drive !== undefined) o.drive = f.drive
  if (f.driveFormat !== undefined) o.driveFormat = f.driveFormat as 'raw' | 'qcow2'
  const cache = cacheOptions(f)
  if (cache !== undefined) o.cache = cache
  if (f.rebuildFrom !== undefined) o.rebuildFrom = f.rebuildFrom
  return o
}

/** A size option's bytes (as --size takes them), or a one-line error naming the option. */
export function sizeOption(option: string, v: string): number {
  const n = parseSize(v)
  if (n === undefined) throw new UsageError(`${option} ‘${v}’ is not a size (a number and b, K, M or G: 20G)`)
  return n
}

/** A duration option's milliseconds, or a one-line error naming the option. */
export function durationOption(option: string, v: string): number {
  const n = parseDuration(v)
  if (n === undefined) {
    throw new UsageError(`${option} ‘${v}’ is not a duration (a number and s, m, h, d or w: 30m, 2h, 7d, 1w)`)
  }
  return n
}

/**
 * The step cache options. --no-cache wins whatever the order (it is how a wrapper's --cache is
 * switched off); the --cache-* values are still checked. Without --cache or --cache-dir they turn
 * nothing on: given alone they are an error, so that a typo'd command does not silently build
 * from scratch (--rebuild-from is planBuild's to refuse: the API has the same rule).
 */
function cacheOptions(f: CliFlags): BuildOptions['cache'] {
  const maxSize = f.cacheMaxSize === undefined ? undefined : sizeOption('--cache-max-size', f.cacheMaxSize)
  const maxAge = f.cacheMaxAge === undefined ? undefined : durationOption('--cache-max-age', f.cacheMaxAge)
  if (f.noCache) return false
  if (!f.cache && f.cacheDir === undefined) {
    for (const [option, v] of [
      ['--cache-max-size', maxSize],
      ['--cache-max-age', maxAge],
    ] as const) {
      if (v !== undefined) throw new UsageError(`${option} needs the step cache (--cache)`)
    }
    return undefined
  }
  return {
    ...(f.cacheDir !== undefined ? { dir: f.cacheDir } : {}),
    ...(maxSize !== undefined ? { maxSize } : {}),
    ...(maxAge !== undefined ? { maxAge } : {}),
  }
}
