// The typed options of build(): what the CLI flags become, and what Node services pass.
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'

import type { EnvvarSpec } from '../elements/environment.js'
import type { OutputFormatName, OutputFormatOptions } from '../outputs/registry.js'

export type { OutputFormatName } from '../outputs/registry.js'

/** The output formats' fields (`compress`, `qemuImgOptions`, `dockerTarget`) come from their files. */
export interface BuildOptions extends OutputFormatOptions {
  /** Elements to build, in order (besides the implicit `base` and ramdisk elements). */
  elements: string[]
  /** diskimage-builder's `lib` directory (-B). Must contain `die`. */
  libPath: string
  /** Element paths, searched in order (-p). Nothing is added implicitly. */
  elementPaths: string[]
  excludeElements?: string[]
  excludeScripts?: string[]
  /** --envvar: `{ name }` carries the host value, `{ name, value }` sets it. */
  envvars?: EnvvarSpec[]
  skipBase?: boolean
  /** Root file system label (default `cloudimg-rootfs`, `img-rootfs` for xfs). */
  rootLabel?: string
  /** DIB_DEFAULT_INSTALLTYPE (default `source`). */
  installType?: string
  /** Host image cache for extra-data.d (default `$HOME/.cache/image-create`). */
  imageCache?: string
  mkfsOptions?: string
  extraPackages?: string[]
  checksum?: boolean
  /** Python for host-side scripts (DIB_PYTHON_EXEC); default `python`, else `python3`. */
  python?: string
  ramdisk?: boolean
  ramdiskElement?: string
  /** Output name, may include directories (default `image`). */
  name?: string
  fsType?: string
  /** Output disk size in bytes (default 5 GiB). */
  size?: number
  formats?: OutputFormatName[]
  /** dpkg-style architecture (default: the host's). */
  arch?: string
  /** A persistent helper drive: HOME, the image cache, build logs. */
  drive?: string
  driveFormat?: 'raw' | 'qcow2'
  memsize?: number
  smp?: number
  network?: boolean
  /** Keep partial outputs (under their temporary names) when the build fails. */
  deleteOnFailure?: boolean
  /** DIB_DEBUG_TRACE; >= 1 also traces the runners. */
  debug?: number
  /** libguestfs verbose messages (as events). */
  verbose?: boolean
  /** libguestfs call trace (as events). */
  trace?: boolean
  /** argv for DIB_ARGS (default: ['virt-dib']). */
  argv?: string[]
  /** Extra Debian packages for the build appliance (beyond those virt-dib adds). */
  appliancePackages?: string[]
  /** Use libguestfs's stock appliance instead of virt-dib's (no python3, perl, gpgv…). */
  stockAppliance?: boolean
  /** Environment the host phases inherit and --envvar reads (default process.env). */
  env?: NodeJS.ProcessEnv
  /**
   * The step cache (--cache): a snapshot after each phase, reused by later builds. Off when absent.
   * `dir` defaults to {@link defaultCacheDir}, `maxSize` (bytes) to {@link DEFAULT_CACHE_MAX_SIZE};
   * `maxAge` (ms): older snapshots are not reused. `false` forces it off (--no-cache): then
   * `rebuildFrom` is moot and ignored, whereas without the cache asked for it is an error.
   */
  cache?: { dir?: string; maxSize?: number; maxAge?: number } | false
  /**
   * SOURCE_DATE_EPOCH (seconds): exported to every phase, and the tree outputs' (tar, tgz, docker,
   * squashfs) times are clamped to it, their entries sorted. Default: an --envvar
   * SOURCE_DATE_EPOCH, else `env`'s.
   */
  sourceDateEpoch?: number
  /** Do not reuse snapshots from this phase on (`install` or `install.d`); needs `cache`. */
  rebuildFrom?: string
}

export type { BuildHooks } from '../engine/context.js'

export const DEFAULT_SIZE = 5 * 1024 ** 3
export const DEFAULT_FORMATS: OutputFormatName[] = ['qcow2']
export const DEFAULT_CACHE_MAX_SIZE = 20 * 1024 ** 3

/**
 * The step cache's folder: `$XDG_CACHE_HOME/virt-dib/steps`, else `~/.cache/virt-dib/steps`
 * (a relative XDG_CACHE_HOME is ignored, as the XDG spec says).
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_CACHE_HOME']
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, 'virt-dib', 'steps')
  return join(env['HOME'] || homedir(), '.cache', 'virt-dib', 'steps')
}
