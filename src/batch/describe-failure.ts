// A failed build in a few lines: what the batch summary prints under it, and what a worker sends
// its submitter (virt-dib submit) when a job fails.
import { ScriptError, VirtDibError } from '../errors.js'

/** Lines of a failed script's output the summary repeats. */
const TAIL_LINES = 5

/** A failed build's error, in a few lines (the summary's lines under it). */
export function describeFailure(e: unknown): string[] {
  // A build that failed on a worker (virt-dib submit): the worker said these lines.
  const remote = (e as { summaryLines?: unknown } | undefined)?.summaryLines
  if (Array.isArray(remote) && remote.every((l) => typeof l === 'string')) return remote
  if (e instanceof ScriptError) {
    const lines = [`error: ${e.message}${e.where === 'chroot' ? ' (in the image chroot)' : ''}`]
    // On the live block the script's output was never shown: its last lines say what went wrong.
    const tail = e.outputTail.slice(-TAIL_LINES)
    if (tail.length > 0) lines.push(`last lines of ${e.hook}/${e.script}:`, ...tail.map((l) => `  ${l}`))
    if (e.logPath) lines.push(`the full log is in ${e.logPath}`)
    return lines
  }
  if (e instanceof VirtDibError) return [`error: ${firstLine(e.message)}`, ...(e.hint ? [e.hint] : [])]
  if ((e as Error | undefined)?.name === 'GuestfsError') {
    const g = e as Error & { op: string }
    return [`error: libguestfs error: ${g.op}: ${firstLine(g.message)}`]
  }
  return [`error: internal error: ${firstLine(e instanceof Error ? e.message : String(e))}`]
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? ''
}
