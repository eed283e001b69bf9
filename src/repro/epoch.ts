// SOURCE_DATE_EPOCH (reproducible-builds.org): the one time a reproducible build may write. Its
// value is checked once, at planning; the tree archive's tar and squashfs read it from the plan.
import { UsageError } from '../errors.js'

/** 9999-12-31T23:59:59Z: tar and the file systems take no later time. */
const MAX_EPOCH = 253402300799

/**
 * The epoch a build clamps its outputs' times to: the API's value first, then an --envvar
 * SOURCE_DATE_EPOCH, then the host environment's; undefined when none is set (or set empty, as
 * reproducible-builds.org says to treat it). A value that is not whole seconds is a one-line error.
 */
export function resolveSourceDateEpoch(
  fromApi: number | undefined,
  fromEnvvar: string | undefined,
  fromHost: string | undefined,
): number | undefined {
  if (fromApi !== undefined) return checkEpoch(String(fromApi), 'sourceDateEpoch')
  for (const [value, what] of [
    [fromEnvvar, '--envvar SOURCE_DATE_EPOCH'],
    [fromHost, 'SOURCE_DATE_EPOCH'],
  ] as const) {
    if (value !== undefined && value !== '') return checkEpoch(value, what)
  }
  return undefined
}

function checkEpoch(value: string, what: string): number {
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(n) || n > MAX_EPOCH) {
    throw new UsageError(`${what} ‘${value}’ is not a time in whole seconds since 1970 (0 to ${MAX_EPOCH})`)
  }
  return n
}

/**
 * GNU tar's options for an archive whose bytes depend only on the tree: entries sorted by name,
 * mtimes clamped to the epoch, pax headers without atime, ctime or the pid in their names.
 */
export function reproducibleTarArgs(epoch: number): string[] {
  return [
    '--sort=name',
    '--format=posix',
    // Version 1.0 names each sparse file's entry after tar's pid (GNUSparseFile.%p); 0.0 keeps its name.
    '--sparse-version=0.0',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    `--mtime=@${epoch}`,
    '--clamp-mtime',
  ]
}
