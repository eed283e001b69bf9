// diskimage-builder's block-device YAML: where it comes from, and its tree notation flattened
// into graph notation (every node named, with a `base`), then checked and typed per plugin.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { parse as parseYaml } from 'yaml'

import type { ResolvedElement } from '../elements/types.js'
import { BlockDeviceConfigError } from '../errors.js'

export const PLUGINS = ['local_loop', 'partitioning', 'lvm', 'mkfs', 'mount', 'fstab'] as const
export type PluginName = (typeof PLUGINS)[number]
const isPlugin = (k: string): k is PluginName => (PLUGINS as readonly string[]).includes(k)

export type Fields = Record<string, unknown>
/** One entry of graph notation: a plugin and its fields, `name` (and usually `base`) set. */
export interface GraphEntry {
  plugin: PluginName
  fields: Fields
}

export interface ConfigSource {
  /** Where the layout came from, for messages: "DIB_BLOCK_DEVICE_CONFIG", a file, or "default". */
  origin: string
  yaml: string
}

/** diskimage-builder's fallback: one file system on the whole disk, mounted at /, in fstab. */
export const DEFAULT_CONFIG = `- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
      mount:
        mount_point: /
        fstab:
          options: "defaults"
          fsck-passno: 1
`

/**
 * The layout to use, first hit wins as in diskimage-builder: DIB_BLOCK_DEVICE_CONFIG (inline YAML
 * or file://path), then per element in order block-device-ARCH.yaml (ppc64le and ppc64el share
 * -ppc64el) or block-device-default.yaml, then the built-in default.
 */
export function chooseConfigSource(
  configVar: string | undefined,
  elements: readonly ResolvedElement[],
  arch: string,
): ConfigSource {
  if (configVar !== undefined && configVar !== '') {
    if (configVar.startsWith('file://')) {
      const path = configVar.slice('file://'.length)
      try {
        return { origin: path, yaml: readFileSync(path, 'utf8') }
      } catch (e) {
        throw new BlockDeviceConfigError(
          `cannot read DIB_BLOCK_DEVICE_CONFIG file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
        )
      }
    }
    return { origin: 'DIB_BLOCK_DEVICE_CONFIG', yaml: configVar }
  }
  const archFile = ['ppc64le', 'ppc64el'].includes(arch) ? 'block-device-ppc64el.yaml' : `block-device-${arch}.yaml`
  for (const e of elements) {
    for (const f of [archFile, 'block-device-default.yaml']) {
      const path = join(e.dir, f)
      if (existsSync(path)) return { origin: path, yaml: readFileSync(path, 'utf8') }
    }
  }
  return { origin: 'default', yaml: DEFAULT_CONFIG }
}

/** A YAML alias inside its own anchor (`&a [*a]`) makes a cyclic value: no layout is one. */
function refersToItself(v: unknown, path = new Set<object>()): boolean {
  if (typeof v !== 'object' || v === null) return false
  if (path.has(v)) return true
  path.add(v)
  const cyclic = Object.values(v).some((x) => refersToItself(x, path))
  path.delete(v)
  return cyclic
}

/** Parses the YAML and flattens tree notation; graph notation passes through unchanged. */
export function configToGraph(source: ConfigSource): GraphEntry[] {
  let doc: unknown
  try {
    doc = parseYaml(source.yaml)
  } catch (e) {
    throw new BlockDeviceConfigError(`block-device config (${source.origin}) is not valid YAML: ${firstLine(e)}`)
  }
  if (refersToItself(doc)) {
    throw new BlockDeviceConfigError(`block-device config (${source.origin}) refers to itself through a YAML alias`)
  }
  if (!Array.isArray(doc)) {
    throw new BlockDeviceConfigError(`block-device config (${source.origin}) must be a list of plugin entries`)
  }
  const out: GraphEntry[] = []
  for (const entry of doc) {
    const [plugin, fields] = singleEntry(entry, source.origin)
    out.push(...flatten(plugin, fields, undefined, source.origin))
  }
  return out
}

function singleEntry(entry: unknown, origin: string): [PluginName, Fields] {
  if (!isRecord(entry)) {
    throw new BlockDeviceConfigError(
      `block-device config (${origin}): entry is not a mapping: ${JSON.stringify(entry)}`,
    )
  }
  const keys = Object.keys(entry)
  if (keys.length !== 1) {
    throw new BlockDeviceConfigError(
      `block-device config (${origin}): each entry must have exactly one plugin key, not ${keys.join(', ') || 'none'}`,
    )
  }
  const key = keys[0]!
  if (!isPlugin(key)) {
    throw new BlockDeviceConfigError(`unknown block-device plugin ‘${key}’ (known: ${PLUGINS.join(', ')})`)
  }
  const fields = entry[key]
  if (!isRecord(fields)) throw new BlockDeviceConfigError(`block-device plugin ‘${key}’ needs a mapping of settings`)
  return [key, fields]
}

/**
 * Tree notation: a nested plugin's base is its parent's name and its default name is
 * `<plugin>_<base>`; partitions take the partitioning's base. Children come before their parent,
 * as in diskimage-builder (the order of mount points in DIB_MOUNTPOINTS follows from it).
 */
function flatten(plugin: PluginName, values: Fields, parentBase: string | undefined, origin: string): GraphEntry[] {
  const out: GraphEntry[] = []
  const self: Fields = {}
  // Names and bases become node names (and a child's default name): text only, or a map would
  // be named `mkfs_[object Object]`.
  const name = word(values['name'], `name of a ‘${plugin}’ entry`, origin)
  const base = word(values['base'], `base of a ‘${plugin}’ entry`, origin) ?? parentBase
  if (base !== undefined) self['base'] = base
  if (name !== undefined) self['name'] = name
  else if (base !== undefined) self['name'] = `${plugin}_${String(base)}`
  else throw new BlockDeviceConfigError(`block-device ‘${plugin}’ entry needs a name (or a base)`)
  for (const [k, v] of Object.entries(values)) {
    if (k === 'name' || k === 'base') continue
    if (k === 'partitions' && plugin === 'partitioning') {
      if (!Array.isArray(v)) throw new BlockDeviceConfigError(`partitions of ‘${String(self['name'])}’ must be a list`)
      self['partitions'] = v.map((p: unknown) => {
        if (!isRecord(p)) throw new BlockDeviceConfigError(`a partition of ‘${String(self['name'])}’ is not a mapping`)
        const part: Fields = {}
        for (const [pk, pv] of Object.entries(p)) {
          if (isPlugin(pk)) {
            if (!isRecord(pv))
              throw new BlockDeviceConfigError(`block-device plugin ‘${pk}’ needs a mapping of settings`)
            if (p['name'] === undefined) throw new BlockDeviceConfigError('a partition needs a name')
            out.push(...flatten(pk, pv, String(word(p['name'], 'name of a partition', origin)), origin))
          } else part[pk] = pv
        }
        part['base'] = self['base']
        return part
      })
    } else if (isPlugin(k)) {
      if (!isRecord(v)) throw new BlockDeviceConfigError(`block-device plugin ‘${k}’ needs a mapping of settings`)
      out.push(...flatten(k, v, String(self['name']), origin))
    } else self[k] = v
  }
  out.push({ plugin, fields: self })
  return out
}

/** `v` if it can be a word (a name, a base), else a config error naming what it is. */
function word(v: unknown, what: string, origin: string): string | number | null | undefined {
  if (v === undefined || v === null || typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) return v
  throw new BlockDeviceConfigError(`block-device config (${origin}): ${what} must be a string, not ${kindOf(v)}`)
}

/** What a YAML value is, for messages ("a mapping", not `[object Object]`). */
export function kindOf(v: unknown): string {
  if (Array.isArray(v)) return 'a list'
  if (isRecord(v)) return 'a mapping'
  if (typeof v === 'boolean') return 'a boolean'
  if (v === null || v === undefined) return 'nothing'
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- only scalars are left (YAML has no functions)
  return `‘${String(v)}’`
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? ''
}
