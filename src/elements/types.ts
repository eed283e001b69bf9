// Data types of the element engine: what was found on disk and what was resolved from it.

/** One element directory found on an element path. */
export interface Element {
  name: string
  /** The element's directory, as found (element path as given + '/' + name). */
  dir: string
  /** The -p entry it came from. */
  elementPath: string
  /** Names from `element-deps` (stripped, blank lines dropped). */
  deps: string[]
  /** Names from `element-provides`. */
  provides: string[]
}

/** An element hidden by one of the same name on an earlier element path. */
export interface ElementOverride {
  name: string
  used: string
  ignored: string
}

export interface ElementIndex {
  /** Element paths in the order given. */
  paths: string[]
  elements: ReadonlyMap<string, Element>
  overrides: ElementOverride[]
}

/** Why an element is in the build. */
export type ElementReason =
  | { kind: 'requested' }
  | { kind: 'implicit'; why: 'base' | 'ramdisk' | 'block-device' }
  | { kind: 'dependency'; of: string }

export interface ResolvedElement extends Element {
  reason: ElementReason
}

export interface ResolveRequest {
  /** Elements named by the user, in order. */
  elements: string[]
  skipBase?: boolean
  ramdisk?: boolean
  ramdiskElement?: string
  excludeElements?: string[]
  /** dpkg-style architecture, for the implicit block-device element. */
  arch?: string
}

export interface Resolution {
  /** The expanded element set, sorted by name (deterministic, unlike diskimage-builder). */
  elements: ResolvedElement[]
  /** The request after implicit elements were added, in the order used. */
  requested: string[]
  /** Virtual name -> the element providing it. */
  provided: ReadonlyMap<string, string>
  /** Elements removed by --exclude-element. */
  excluded: string[]
  /** True if this is a ramdisk build (--ramdisk, or ironic-agent in the set). */
  ramdisk: boolean
}
