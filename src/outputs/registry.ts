// Every output format, by name: the one list. Checked once at load: sorted, unique, well-named,
// no flag spelled twice (the OCaml bake()). The format names, the formats' part of BuildOptions,
// their settings and the CLI's format flags are all derived from it.
import { UsageError } from '../errors.js'
import { docker } from './docker.js'
import { qcow2 } from './qcow2.js'
import { raw } from './raw.js'
import { squashfs } from './squashfs.js'
import { tar } from './tar.js'
import { tgz } from './tgz.js'
import type { FormatFlag, OutputFormat } from './types.js'
import { vhd } from './vhd.js'

const LISTED = [docker, qcow2, raw, squashfs, tar, tgz, vhd] as const
type Listed = (typeof LISTED)[number]

/** A --formats name. */
export type OutputFormatName = Listed['name']

type OptionsOf<F> = F extends OutputFormat<string, infer O, unknown> ? O : never
type SettingsOf<F> = F extends OutputFormat<string, object, infer S> ? S : never
type Intersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never

/** Every format's fields of BuildOptions (`compress`, `qemuImgOptions`, `dockerTarget`…), together. */
export type OutputFormatOptions = Intersection<OptionsOf<Listed>>

/** The chosen formats' settings, normalised with their defaults and frozen, by format name. */
export type OutputSettings = { readonly [F in Listed as F['name']]?: Readonly<SettingsOf<F>> }

function bake(
  formats: readonly OutputFormat<OutputFormatName>[],
): ReadonlyMap<OutputFormatName, OutputFormat<OutputFormatName>> {
  const map = new Map<OutputFormatName, OutputFormat<OutputFormatName>>()
  const keys = new Set<string>()
  for (const f of [...formats].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!/^[a-z][a-z0-9]*$/.test(f.name)) throw new Error(`bad output format name ${f.name}`)
    if (map.has(f.name)) throw new Error(`duplicate output format ${f.name}`)
    for (const k of f.flags.flatMap((flag) => flag.keys)) {
      if (keys.has(k)) throw new Error(`output format ${f.name}: flag ${k} is spelled twice`)
      keys.add(k)
    }
    map.set(f.name, f)
  }
  return map
}

/** The formats by name, in name order (the order they run in). */
export const OUTPUT_FORMATS = bake(LISTED)

/** Every --formats name, sorted. */
export const OUTPUT_FORMAT_NAMES: readonly OutputFormatName[] = [...OUTPUT_FORMATS.keys()]

/** The formats' own command-line flags (cli/flags.ts adds them to its table). */
export const OUTPUT_FLAGS: readonly FormatFlag<OutputFormatOptions>[] = [...OUTPUT_FORMATS.values()].flatMap(
  (f) => f.flags,
)

export function isFormatName(name: string): name is OutputFormatName {
  return OUTPUT_FORMATS.has(name as OutputFormatName)
}

/** `name` as a format name; a UsageError (the --formats one) when no format has it. */
export function checkFormatName(name: string): OutputFormatName {
  if (!isFormatName(name)) throw new UsageError(`invalid format ‘${name}’ in --formats`)
  return name
}

/** The formats named, each once, sorted by name; a UsageError for an empty list or an unknown name. */
export function resolveFormats(names: readonly string[]): OutputFormat<OutputFormatName>[] {
  if (names.length === 0) throw new UsageError('the list of output formats cannot be empty')
  const chosen = new Set(names.map(checkFormatName))
  return [...OUTPUT_FORMATS.values()].filter((f) => chosen.has(f.name))
}

/**
 * The settings of the formats named, from the BuildOptions-shaped `options`: each normalised with
 * its format's defaults, in name order, throwing the first format's UsageError (docker without a
 * target). Only the chosen formats' options are checked.
 */
export function resolveOutputSettings(
  names: readonly OutputFormatName[],
  options: Readonly<OutputFormatOptions>,
): OutputSettings {
  const settings: Record<string, unknown> = {}
  for (const f of resolveFormats(names)) settings[f.name] = f.resolveSettings(options)
  return Object.freeze(settings)
}

/** Formats whose host tools exist here (docker only with a docker client). */
export function availableFormats(): OutputFormatName[] {
  return [...OUTPUT_FORMATS.values()]
    .filter((f) => {
      try {
        f.checkHost?.()
        return true
      } catch {
        return false
      }
    })
    .map((f) => f.name)
}
