// BuildContext: the one object a build step receives — plan, workspace, cleanup stack,
// events, cancellation, the appliance handle and the outputs staged so far. What steps give each
// other is not here: it is the typed state of the step table (state.ts, steps.ts).
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { pipeline, type Writable } from 'node:stream'

import type { Where } from '../elements/environment.js'
import * as L from '../elements/layout.js'
import { BuildAbortedError } from '../errors.js'
import type { BuildEvent } from '../events.js'
import type { Guestfs } from '../guestfs/index.js'
import { HashingStream, type Digests } from '../host/checksums.js'
import { watchHostSpace } from '../host/space-watch.js'
import { removeWorkspace } from '../host/workspace.js'
import { outputWriteError } from '../outputs/stream.js'
import type { OutputFormat, FileSink } from '../outputs/types.js'
import type { EventInput, PhaseContext, RunnablePhase } from '../phases/types.js'
import { CleanupStack } from '../util/cleanup.js'
import type { CacheRun } from './cache-run.js'
import { commitStaged } from './commit.js'
import { PlanReads } from './pipeline.js'
import type { BuildPlan } from './plan.js'

export interface StagedFile {
  /** Where it is written during the build (a hidden name in the output directory). */
  temp: string
  /** Where it goes when the build succeeds. */
  final: string
  format?: string
  digests?: Digests
}

/** What a running build reports to, and is stopped by (build()'s hooks). */
export interface BuildHooks {
  /** Progress and log events, in order. Never throws into the build: errors are reported. */
  onEvent?: (event: BuildEvent) => void
  /** Cancels the build: the appliance is stopped, temp files and partial outputs removed. */
  signal?: AbortSignal
}

export interface BuildResult {
  outputs: { format: string; path: string; size: number; md5?: string; sha256?: string }[]
  /** `<name>.d` if elements left files there. */
  extraDataDir?: string
  seconds: number
}

export class BuildContext implements PhaseContext {
  readonly cleanup = new CleanupStack()
  /**
   * The nonce that marks the runner's protocol lines, so script output cannot forge them: random
   * on purpose, and never part of the plan, so no step's inputs depend on it.
   */
  readonly token = `VDIB${randomBytes(6).toString('hex')}`
  readonly staged: StagedFile[] = []
  readonly t0 = Date.now()
  /** Which plan fields each step reads (ctx.plan is a recording view of the plan). */
  readonly planReads = new PlanReads()
  readonly plan: BuildPlan
  /** The step cache of this build (--cache), set before the steps run. */
  cache: CacheRun | undefined
  #g: Guestfs | undefined
  #hostFull: string | undefined
  readonly #held = new Map<string, () => Promise<void>>()
  /** The build log's file name on the helper drive (named after the build's start, UTC). */
  readonly logName: string
  /** Where the full log is, for failure messages: only with --drive (else the drive is scratch). */
  readonly logPath: string | undefined

  private constructor(
    plan: BuildPlan,
    readonly workspace: string,
    readonly hooks: BuildHooks,
    readonly signal: AbortSignal,
  ) {
    this.plan = this.planReads.view(plan)
    this.logName = logFileName(new Date(this.t0))
    const drive = plan.appliance.drive
    this.logPath = drive ? `${L.guest(L.logPath(this.logName))} on the helper drive ${drive.path}` : undefined
  }

  static async open(plan: BuildPlan, hooks: BuildHooks): Promise<BuildContext> {
    const signal = hooks.signal ?? new AbortController().signal
    const workspace = await mkdtemp(join(plan.env['TMPDIR'] || tmpdir(), 'dib.'))
    const ctx = new BuildContext(plan, workspace, hooks, signal)
    // Not a plain rm -r: a FUSE view left mounted inside must be detached, never walked into.
    ctx.cleanup.defer('workspace', () => removeWorkspace(workspace))
    return ctx
  }

  get g(): Guestfs {
    if (!this.#g) throw new Error('the appliance is not running') // a bug: the CLI says internal error
    return this.#g
  }

  set g(g: Guestfs) {
    this.#g = g
  }

  /**
   * Keeps a resource one step makes and a later step releases (the FUSE view of extra-data.d),
   * so that the typed state stays plain data. Its own cleanup undo covers a release never reached.
   */
  hold(name: string, release: () => Promise<void>): void {
    this.#held.set(name, release)
  }

  /** Releases a resource held under `name` (once); nothing if none is held. */
  async release(name: string): Promise<void> {
    const release = this.#held.get(name)
    this.#held.delete(name)
    await release?.()
  }

  /** Set when a host file system the appliance writes to filled up (the build was stopped). */
  get hostFull(): string | undefined {
    return this.#hostFull
  }

  /**
   * Watches the host file systems the running appliance writes to (see hostWriteDirs): when one
   * fills up, the appliance is killed, so the guest fails at once instead of qemu pausing forever.
   */
  watchHostSpace(disk: string, scratchDir: string): void {
    const watch = watchHostSpace(this.hostWriteDirs(disk, scratchDir), (dir) => {
      this.#hostFull = dir
      try {
        this.g.killAppliance()
      } catch {
        // already closed: the host step writing there fails by itself
      }
    })
    this.cleanup.defer('host space watch', () => watch.stop())
  }

  emit(event: EventInput): void {
    try {
      this.hooks.onEvent?.({ ...event, elapsed: (Date.now() - this.t0) / 1000 })
    } catch {
      // A failing listener must not break the build.
    }
  }

  progress(text: string): void {
    this.emit({ kind: 'progress', text })
  }

  checkAborted(): void {
    if (this.signal.aborted) {
      const reason: unknown = this.signal.reason
      throw reason instanceof BuildAbortedError ? reason : new BuildAbortedError(undefined, { cause: reason })
    }
  }

  controlFile(phase: RunnablePhase): string {
    return L.controlFileAt(phase.where, phase.hook, this.workspace)
  }

  runLog(where: Where): string {
    return where === 'host' ? '' : L.seenFrom(where, L.guest(L.logPath(this.logName)), '')
  }

  runnerPath(where: Where): string {
    return L.runnerAt(where, this.workspace)
  }

  /** A hidden temporary name in the output directory, removed on failure unless kept. */
  stage(final: string, format?: string): StagedFile {
    const base = final.slice(this.plan.outputDir.length + 1)
    const temp = join(this.plan.outputDir, `.${base}.vdib-${randomBytes(4).toString('hex')}.tmp`)
    const file: StagedFile = { temp, final, ...(format ? { format } : {}) }
    this.staged.push(file)
    if (!this.plan.keepPartialOutputs) {
      this.cleanup.defer(`output ${temp}`, () => rm(temp, { force: true }))
    }
    return file
  }

  /**
   * A write stream to a staged file that hashes on the way when checksums are on. Its `done`
   * rejects with the file's name and the OS error (ENOSPC: out of space on the host), and is
   * never left to reject unhandled; a failure destroys the whole chain, so writers never wait.
   */
  fileSink(file: StagedFile): FileSink {
    const out = createWriteStream(file.temp)
    const hash = this.plan.checksum ? new HashingStream() : undefined
    const head: Writable = hash ?? out
    const done = new Promise<void>((resolve, reject) => {
      const settle = (e: unknown) => {
        if (!e) {
          if (hash) file.digests = hash.digests()
          resolve()
          return
        }
        head.destroy()
        reject(outputWriteError(file.final, e))
      }
      if (hash) {
        pipeline(hash, out, (e) => settle(e))
        return
      }
      out.on('error', settle)
      out.on('close', () =>
        settle(out.writableFinished ? undefined : new Error('the output was stopped before it was complete')),
      )
    })
    done.catch(() => undefined) // awaited by whoever writes it; never unhandled
    return Object.assign(head, { done }) satisfies FileSink
  }

  /** Host directories the build writes to while the appliance runs: the space watch covers all. */
  hostWriteDirs(disk: string, scratchDir: string): string[] {
    return [...new Set([this.plan.outputDir, dirname(disk), this.workspace, scratchDir])]
  }

  outputPathFor(format: OutputFormat): string {
    return `${this.plan.outputPath}.${format.extension}`
  }

  /**
   * Moves every staged output into place, all or nothing: files it replaces are kept aside
   * until the last one is in place, and put back if any step fails (see commit.ts).
   */
  async commitOutputs(): Promise<void> {
    await commitStaged(this.staged)
  }
}

/** `virt-dib-YYYYMMDD-HHMMSS.log`, as the original names its log. */
function logFileName(start: Date): string {
  const p = (n: number) => String(n).padStart(2, '0')
  const d = start
  return `virt-dib-${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}.log`
}
