// `virt-dib cache list|prune`: the step cache seen from the command line (src/cache/store.ts).
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'

import { Command, CommanderError } from 'commander'

import { DEFAULT_CACHE_MAX_SIZE, defaultCacheDir } from '../api/options.js'
import { formatDuration } from '../cache/duration.js'
import { openStore, shortKey, type EntryMeta, type StepStore } from '../cache/store.js'
import { UsageError } from '../errors.js'
import { formatSize } from '../util/sizes.js'
import { durationOption, sizeOption } from './options.js'
import { GetoptError } from './parse.js'

export interface VerbIo {
  out: NodeJS.WritableStream
  env: NodeJS.ProcessEnv
  /** One-line warnings (an unusable entry removed); the CLI prints them like a build's. */
  warn: (text: string) => void
  /** The clock (ms since the epoch); for tests. */
  now?: () => number
}

const CACHE_USAGE = `virt-dib cache: list or prune the step cache (--cache)

 virt-dib cache list [--cache-dir DIR] [--machine-readable]
 virt-dib cache prune [--max-size SIZE] [--older-than DURATION] [--all] [--cache-dir DIR]

prune removes the entries last used longer ago than --older-than (30m, 2h, 7d, 1w), the
least recently used ones down to --max-size (sizes as --size takes them: 20G), or --all;
with none of these, down to the default --cache-max-size (${formatSize(DEFAULT_CACHE_MAX_SIZE)}). Entries a running
build uses, and those they build on, are kept.
`

/** Runs `virt-dib cache ARGS…`; the exit code, or throws a usage or store error. */
export async function runCacheVerb(args: readonly string[], io: VerbIo): Promise<number> {
  const [sub, ...rest] = args
  if (sub === undefined) throw usage('cache needs a command: list or prune')
  if (sub === '--help' || sub === 'help') return help(io)
  if (sub === 'list') return list(parseVerbArgs('cache list', rest, ['--cache-dir', '--machine-readable']), io)
  if (sub === 'prune') {
    return prune(parseVerbArgs('cache prune', rest, ['--cache-dir', '--max-size', '--older-than', '--all']), io)
  }
  throw usage(`cache: unknown command ‘${sub}’ (list or prune)`)
}

/** The options the cache verbs take; `true` for switches. */
const VERB_OPTIONS: Readonly<Record<string, string | true>> = {
  '--cache-dir': '<directory>',
  '--machine-readable': true,
  '--max-size': '<size>',
  '--older-than': '<duration>',
  '--all': true,
  '--help': true,
}

type VerbFlags = Partial<Record<string, string | true>>

function parseVerbArgs(name: string, args: readonly string[], allowed: readonly string[]): VerbFlags {
  const flags: VerbFlags = {}
  const program = new Command(name)
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined })
    .helpOption(false)
    .allowExcessArguments(false)
  for (const key of [...allowed, '--help']) {
    const arg = VERB_OPTIONS[key]!
    program.option(arg === true ? key : `${key} ${arg}`)
  }
  for (const a of args) {
    const [key, value] = a.split(/=(.*)/s)
    if (value !== undefined && VERB_OPTIONS[key!] === true && allowed.includes(key!)) {
      throw usage(`${name}: option '${key}' doesn't allow an argument`)
    }
  }
  try {
    program.parse(args, { from: 'user' })
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e
    const unknown = /unknown option '([^']+)'/.exec(e.message)
    if (unknown) throw usage(`${name}: unrecognized option '${unknown[1]}'`)
    const missing = /option '([^']+)' argument missing/.exec(e.message)
    if (missing) throw usage(`${name}: option '${missing[1]!.split(' ')[0]}' requires an argument`)
    if (e.code === 'commander.excessArguments') throw usage(`${name}: takes no arguments`)
    throw usage(`${name}: ${e.message.replace(/^error: /, '')}`)
  }
  const o = program.opts<Record<string, string | true | undefined>>()
  for (const key of allowed) {
    const v = o[program.options.find((opt) => opt.long === key)!.attributeName()]
    if (v !== undefined) flags[key] = v
  }
  if (o['help'] === true) flags['--help'] = true
  return flags
}

/** A usage error whose "Try …" line names `virt-dib cache --help`. */
function usage(message: string): GetoptError {
  const e = new GetoptError(message)
  e.tryHelp = 'virt-dib cache --help'
  return e
}

function cacheDir(flags: VerbFlags, io: VerbIo): string {
  const dir = flags['--cache-dir']
  if (dir === '') throw new UsageError('--cache-dir must not be empty')
  return resolve(typeof dir === 'string' ? dir : defaultCacheDir(io.env))
}

async function list(flags: VerbFlags, io: VerbIo): Promise<number> {
  if (flags['--help']) return help(io)
  const dir = cacheDir(flags, io)
  const machine = flags['--machine-readable'] === true
  // Listing must not create the folder: say there is nothing instead.
  const entries = existsSync(dir) ? inChainOrder(await (await open(dir, io)).list()) : []
  if (machine) {
    for (const e of entries) {
      const json = {
        key: e.key,
        parent: e.parent,
        step: e.step,
        elements: e.elements,
        bytes: e.bytes,
        created: new Date(e.createdAt).toISOString(),
        lastUsed: new Date(e.lastUsedAt).toISOString(),
      }
      io.out.write(JSON.stringify(json) + '\n')
    }
    return 0
  }
  if (entries.length === 0) {
    io.out.write(`The step cache in ${dir} is empty.\n`)
    return 0
  }
  const now = (io.now ?? Date.now)()
  const rows = [
    ['KEY', 'STEP', 'SIZE', 'AGE', 'LAST USE', 'ELEMENTS'],
    ...entries.map((e) => [
      shortKey(e.key),
      e.step,
      formatSize(e.bytes),
      formatDuration(now - e.createdAt),
      `${formatDuration(now - e.lastUsedAt)} ago`,
      e.elements.join(' '),
    ]),
  ]
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  // Sizes and ages right-aligned, so that they compare at a glance.
  const cell = (c: string, i: number, last: boolean) =>
    last ? c : i >= 2 && i <= 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)
  for (const r of rows) io.out.write(r.map((c, i) => cell(c, i, i === r.length - 1)).join('  ') + '\n')
  io.out.write(`${totalText(entries)} in ${dir}\n`)
  return 0
}

async function prune(flags: VerbFlags, io: VerbIo): Promise<number> {
  if (flags['--help']) return help(io)
  const dir = cacheDir(flags, io)
  const all = flags['--all'] === true
  const maxSizeText = flags['--max-size']
  const olderText = flags['--older-than']
  const maxSize = typeof maxSizeText === 'string' ? sizeOption('--max-size', maxSizeText) : undefined
  const olderThanMs = typeof olderText === 'string' ? durationOption('--older-than', olderText) : undefined
  if (all && (maxSize !== undefined || olderThanMs !== undefined)) {
    throw new UsageError('cache prune: --all removes every entry; give it without --max-size or --older-than')
  }
  if (olderThanMs === 0) throw new UsageError('--older-than must be greater than zero')
  if (!existsSync(dir)) {
    io.out.write(`No step cache in ${dir}: nothing to remove.\n`)
    return 0
  }
  const store = await open(dir, io)
  // Without a criterion, the size cap a build keeps; --older-than alone removes by age only.
  const removed = await store.evict(
    all
      ? { all }
      : {
          maxSize: maxSize ?? (olderThanMs === undefined ? DEFAULT_CACHE_MAX_SIZE : Number.POSITIVE_INFINITY),
          ...(olderThanMs !== undefined ? { olderThanMs } : {}),
        },
  )
  const left = await store.list()
  const freed = removed.reduce((n, e) => n + e.bytes, 0)
  io.out.write(
    removed.length === 0
      ? 'Nothing to remove.\n'
      : `Removed ${plural(removed.length, 'entry', 'entries')} (${formatSize(freed)}).\n`,
  )
  io.out.write(`${totalText(left)} in ${dir}\n`)
  return 0
}

function help(io: VerbIo): number {
  io.out.write(CACHE_USAGE)
  return 0
}

/** Oldest first; of entries made in the same millisecond, parents before their children. */
function inChainOrder(entries: readonly EntryMeta[]): EntryMeta[] {
  const byKey = new Map(entries.map((e) => [e.key, e]))
  const depth = (e: EntryMeta): number => {
    let n = 0
    for (let p = e.parent; p !== null && n <= byKey.size; p = byKey.get(p)?.parent ?? null) n++
    return n
  }
  return [...entries].sort((a, b) => a.createdAt - b.createdAt || depth(a) - depth(b) || (a.key < b.key ? -1 : 1))
}

function open(dir: string, io: VerbIo): Promise<StepStore> {
  return openStore(dir, { warn: io.warn, ...(io.now ? { now: io.now } : {}) })
}

function totalText(entries: readonly EntryMeta[]): string {
  const bytes = entries.reduce((n, e) => n + e.bytes, 0)
  return `Total: ${plural(entries.length, 'entry', 'entries')}, ${formatSize(bytes)}`
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`
}
