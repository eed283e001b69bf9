// Expands the requested elements through element-deps and element-provides, as
// diskimage-builder does (breadth first, "provided" names skipped), but deterministically:
// queue order follows the files, virtual names are resolved after the queue drains (so a
// virtual name listed before its provider works), and the result is sorted by name.
import { ElementError } from '../errors.js'
import { checkElementName } from './names.js'
import type { Element, ElementIndex, ElementReason, Resolution, ResolveRequest, ResolvedElement } from './types.js'

const OPERATING_SYSTEM = 'operating-system'

/** The request with diskimage-builder's implicit elements, in the order it adds them. */
export function withImplicitElements(req: ResolveRequest): { names: string[]; reasons: Map<string, ElementReason> } {
  const names: string[] = []
  const reasons = new Map<string, ElementReason>()
  const add = (name: string, reason: ElementReason) => {
    if (reasons.has(name)) return
    names.push(name)
    reasons.set(name, reason)
  }
  if (req.ramdisk) add(req.ramdiskElement ?? 'ramdisk', { kind: 'implicit', why: 'ramdisk' })
  if (!req.skipBase) add('base', { kind: 'implicit', why: 'base' })
  for (const e of req.elements) add(e, { kind: 'requested' })
  // diskimage-builder: `vm` without a block-device-* element gets the default layout element.
  if (req.elements.includes('vm') && !req.elements.some((e) => e.startsWith('block-device-'))) {
    const arm = req.arch === 'arm64' || req.arch === 'aarch64'
    add(arm ? 'block-device-efi' : 'block-device-mbr', { kind: 'implicit', why: 'block-device' })
  }
  // Implicit elements come first in the queue, as diskimage-builder prepends them.
  return { names, reasons }
}

function describe(reason: ElementReason | undefined): string {
  if (!reason) return ''
  switch (reason.kind) {
    case 'requested':
      return ' (requested on the command line)'
    case 'implicit':
      return reason.why === 'base' ? ' (added implicitly; use --skip-base to leave it out)' : ' (added implicitly)'
    case 'dependency':
      return ` (required by ‘${reason.of}’)`
  }
}

/** Resolves a request against loaded elements. Throws ElementError naming who asked for what. */
export function resolveElements(index: ElementIndex, req: ResolveRequest): Resolution {
  for (const e of req.elements) checkElementName(e, 'the element list')
  for (const e of req.excludeElements ?? []) checkElementName(e, '--exclude-element')
  if (req.ramdiskElement !== undefined) checkElementName(req.ramdiskElement, '--ramdisk-element')

  const { names: requested, reasons } = withImplicitElements(req)
  const final = new Set<string>(requested)
  const queue = [...requested]
  const providedBy = new Map<string, string>()
  const unresolved: string[] = []

  while (queue.length > 0) {
    const name = queue.shift()!
    if (providedBy.has(name)) continue
    const element = index.elements.get(name)
    if (!element) {
      unresolved.push(name) // maybe a virtual name whose provider is still in the queue
      continue
    }
    for (const p of element.provides) {
      const other = providedBy.get(p)
      if (other !== undefined && other !== name) {
        const [a, b] = [other, name].sort()
        throw new ElementError(`‘${p}’ is provided by both ‘${a}’ and ‘${b}’`)
      }
      providedBy.set(p, name)
    }
    for (const dep of element.deps) {
      checkElementName(dep, `element-deps of ‘${name}’`)
      if (!final.has(dep) && !providedBy.has(dep)) {
        queue.push(dep)
        reasons.set(dep, { kind: 'dependency', of: name })
      }
      final.add(dep)
    }
  }

  for (const name of unresolved) {
    if (!providedBy.has(name)) throw new ElementError(`element ‘${name}’ not found${describe(reasons.get(name))}`)
  }

  const conflicts = requested.filter((e) => providedBy.has(e))
  if (conflicts.length > 0) {
    const list = conflicts.map((e) => `‘${e}’ (by ‘${providedBy.get(e)}’)`).join(', ')
    throw new ElementError(`following elements are already provided by another element: ${list}`)
  }
  if (!providedBy.has(OPERATING_SYSTEM)) {
    throw new ElementError('please include an operating system element', {
      hint: 'an element providing ‘operating-system’ (e.g. debian-minimal, ubuntu, centos) is required',
    })
  }

  const exclude = new Set(req.excludeElements ?? [])
  const elements: ResolvedElement[] = []
  for (const name of [...final].sort(byteOrder)) {
    if (providedBy.has(name) || exclude.has(name)) continue
    const element = index.elements.get(name) as Element
    elements.push({ ...element, reason: reasons.get(name) ?? { kind: 'requested' } })
  }
  const names = new Set(elements.map((e) => e.name))
  return {
    elements,
    requested,
    provided: providedBy,
    excluded: [...exclude].filter((e) => final.has(e)).sort(byteOrder),
    ramdisk: !!req.ramdisk || names.has('ironic-agent'),
  }
}

export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}
