// argv -> CliFlags + element names, with GNU getopt_long_only habits the original had:
// `-name x` works like `--name x`, unambiguous prefixes of long options are accepted, and
// options may come after element names. commander does the parsing proper.
import { Command, CommanderError, Option } from 'commander'

import { UsageError } from '../errors.js'
import { defaultFlags, FLAGS, type CliFlags, type FlagSpec } from './flags.js'

/** A usage error printed getopt-style: `virt-dib: <msg>` and the "Try --help" line. */
export class GetoptError extends UsageError {
  override name = 'GetoptError'
  /** The command the "Try …" line names (a verb's own help). */
  tryHelp = 'virt-dib --help'
}

const longKeys = FLAGS.flatMap((f) => f.keys.filter((k) => k.startsWith('--')))
const shortKeys = new Set(FLAGS.flatMap((f) => f.keys.filter((k) => !k.startsWith('--'))))
const specByKey = new Map<string, FlagSpec>(FLAGS.flatMap((f) => f.keys.map((k) => [k, f] as const)))

/** Exact long option, or the only one the prefix fits; undefined if none or ambiguous. */
function expandLong(name: string): string | undefined {
  if (longKeys.includes(name)) return name
  const matches = longKeys.filter((k) => k.startsWith(name))
  const specs = new Set(matches.map((m) => specByKey.get(m)))
  return specs.size === 1 ? matches[0] : undefined
}

/** Rewrites argv so commander sees canonical `--long[=value]` spellings. */
export function normalizeArgv(args: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a === '--') {
      out.push(...args.slice(i))
      break
    }
    let candidate: string | undefined
    if (a.startsWith('--')) candidate = a
    else if (a.startsWith('-') && a.length > 2 && !shortKeys.has(a)) {
      const eq = a.indexOf('=')
      const name = `-${eq === -1 ? a : a.slice(0, eq)}`
      if (expandLong(name)) candidate = `-${a}`
    }
    if (!candidate) {
      out.push(a)
      continue
    }
    const eq = candidate.indexOf('=')
    const name = eq === -1 ? candidate : candidate.slice(0, eq)
    const long = expandLong(name)
    if (!long) {
      throw new GetoptError(`unrecognized option '${name}'`)
    }
    const spec = specByKey.get(long)!
    const value = eq === -1 ? undefined : candidate.slice(eq + 1)
    if (spec.optionalArg !== undefined) {
      out.push(`${long}=${value ?? ''}`) // the value is taken only with '='
    } else if (value !== undefined) {
      if (!spec.arg) throw new GetoptError(`option '${long}' doesn't allow an argument`)
      out.push(long, value)
    } else {
      out.push(long)
    }
  }
  return out
}

export interface ParsedArgs {
  flags: CliFlags
  elements: string[]
}

/** Parses argv (without node and script). Throws GetoptError/UsageError. */
export function parseArgv(args: readonly string[]): ParsedArgs {
  const flags = defaultFlags()
  const program = new Command('virt-dib')
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined })
    .helpOption(false)
    .allowExcessArguments(true)
    .argument('[elements...]')
  for (const spec of FLAGS) {
    const short = spec.keys.find((k) => !k.startsWith('--'))
    const longs = spec.keys.filter((k) => k.startsWith('--'))
    const placeholder = spec.arg ?? (spec.optionalArg !== undefined ? '<value>' : undefined)
    const apply = (value: string) => spec.apply(flags, value)
    // commander takes one long spelling per option: aliases become options of their own.
    const spellings = longs.length > 0 ? longs.map((l, i) => (i === 0 && short ? `${short}, ${l}` : l)) : [short!]
    for (const s of spellings) {
      const opt = new Option(placeholder ? `${s} ${placeholder}` : s)
      if (placeholder) {
        opt.argParser((v: string) => {
          apply(v)
          return undefined
        })
      } else {
        // A switch, by its event: by option name, since `--network` and `--no-network` share an
        // attribute name (listening by it, `--network` turned the network off).
        program.on(`option:${opt.name()}`, () => apply(''))
      }
      program.addOption(opt)
    }
  }
  let elements: string[] = []
  program.action((els: string[]) => {
    elements = els
  })
  try {
    program.parse(normalizeArgv(args), { from: 'user' })
  } catch (e) {
    if (e instanceof CommanderError) throw new GetoptError(getoptText(e))
    throw e
  }
  return { flags, elements }
}

/** A commander error as getopt words it (`unrecognized option '--x'`), as the original says them. */
export function getoptText(e: CommanderError): string {
  const unknown = /unknown option '([^']+)'/.exec(e.message)
  if (unknown) return `unrecognized option '${unknown[1]}'`
  const missing = /option '([^']+)' argument missing/.exec(e.message)
  if (missing) {
    const key = missing[1]!
      .split(/[ ,]+/)
      .filter((k) => k.startsWith('-'))
      .pop()
    return `option '${key}' requires an argument`
  }
  return e.message.replace(/^error: /, '')
}
