// The batch API's types (buildMany): what goes in, the events that come out tagged with the
// build's name, and one outcome per build.
import type { BuildOptions } from '../api/options.js'
import type { BuildResult } from '../engine/context.js'
import type { BuildEvent } from '../events.js'

/** One build of a batch: the batch file's entry (src/batch/batch-file.ts) or a caller's own. */
export interface ManyBuild {
  /** Its label in progress lines and the summary; what another build's `base` names. Unique. */
  name: string
  /**
   * The build this one is a layer over: it starts from that build's snapshot (see the README's
   * "Batch builds"); `options.elements` are the whole set (the base's, then the layer's own).
   */
  base?: string
  options: BuildOptions
}

export interface BuildManyOptions {
  /** Builds run at once (default: what the machine holds, {@link defaultConcurrency}). */
  concurrency?: number
  /** The step cache, always on for a batch (dir defaults to defaultCacheDir()). */
  cache?: { dir?: string; maxSize?: number; maxAge?: number }
  /** The first failure stops the builds still running and skips those not started. */
  failFast?: boolean
  /** Stops every build (each cleans up as after any failure); the batch then rejects with BuildAbortedError. */
  signal?: AbortSignal
  onEvent?: (event: BatchEvent) => void
}

/** A build's own event, tagged with its name. */
export type TaggedBuildEvent = BuildEvent & { build: string }

/** The batch's own events (`elapsed`: seconds since the batch started). */
export type BatchLifecycleEvent =
  | { kind: 'build-start'; build: string; elapsed: number }
  | {
      kind: 'build-end'
      build: string
      elapsed: number
      status: BuildOutcome['status']
      seconds: number
      /** A failure's message, or why it was skipped. */
      reason?: string
    }

export type BatchEvent = TaggedBuildEvent | BatchLifecycleEvent

/** What became of one build. `reused`: the phases its cache hits restored instead of running. */
export type BuildOutcome =
  | { name: string; status: 'ok'; result: BuildResult; seconds: number; reused: string[] }
  | { name: string; status: 'failed'; error: unknown; seconds: number; reused: string[] }
  | { name: string; status: 'skipped'; reason: string }
