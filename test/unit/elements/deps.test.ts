// Dependency resolution: diskimage-builder's own cases (test_elementdeps.py), written anew,
// plus determinism, virtual names listed before their provider and clear messages.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { resolveElements } from '../../../src/elements/deps.js'
import { loadElementIndex } from '../../../src/elements/discover.js'
import type { ElementIndex, ResolveRequest } from '../../../src/elements/types.js'
import { ElementError } from '../../../src/errors.js'
import { TempTree } from '../../helpers/element-tree.js'

describe('element dependencies', () => {
  const tree = new TempTree()
  let index: ElementIndex
  let base: string
  let override: string

  beforeAll(() => {
    base = tree.elements('elements', {
      'requires-foo': { deps: ['foo'] },
      foo: { provides: ['operating-system'] },
      'requires-requires-foo': { deps: ['requires-foo'] },
      self: { deps: ['self'] },
      provides_virtual: { provides: ['virtual'] },
      also_provides_virtual: { provides: ['virtual'] },
      requires_virtual: { deps: ['virtual'], provides: ['operating-system'] },
      virtual: { deps: ['extra_dependency'] },
      extra_dependency: {},
      circular1: { deps: ['circular2'], provides: ['operating-system'] },
      circular2: { deps: ['circular1'] },
      provides_new_virtual: { provides: ['new_virtual', 'operating-system'] },
      requires_new_virtual: { deps: ['new_virtual'] },
      // a virtual name listed before its provider in the same element-deps
      virtual_first: { deps: ['new_virtual', 'provides_new_virtual'] },
      override_element: {},
      vm: {},
      'block-device-mbr': { provides: ['block-device'] },
      'block-device-gpt': { provides: ['block-device'] },
      'block-device-efi': { provides: ['block-device'] },
      ramdisk: { deps: ['foo'] },
      'my-ramdisk': {},
      'ironic-agent': {},
      base: {},
      'needs-missing': { deps: ['ghost'] },
      'spaces-in-deps': { deps: ['  foo  ', '', '   '] },
    })
    override = tree.elements('override', { override_element: {} })
    index = loadElementIndex([override, base])
  })
  afterAll(() => tree.remove())

  const names = (req: Partial<ResolveRequest> & { elements: string[] }) =>
    resolveElements(index, { skipBase: true, ...req }).elements.map((e) => e.name)

  it('non-transitive and transitive deps', () => {
    expect(names({ elements: ['requires-foo'] })).toEqual(['foo', 'requires-foo'])
    expect(names({ elements: ['requires-requires-foo'] })).toEqual(['foo', 'requires-foo', 'requires-requires-foo'])
    expect(names({ elements: ['foo'] })).toEqual(['foo'])
  })

  it('self and circular deps', () => {
    expect(names({ elements: ['self', 'foo'] })).toEqual(['foo', 'self'])
    expect(names({ elements: ['circular1'] })).toEqual(['circular1', 'circular2'])
  })

  it('provides: the virtual element is replaced by its provider', () => {
    const r = resolveElements(index, { skipBase: true, elements: ['provides_virtual', 'requires_virtual'] })
    expect(r.elements.map((e) => e.name)).toEqual(['provides_virtual', 'requires_virtual'])
    expect(r.provided.get('virtual')).toBe('provides_virtual')
  })

  it('a requested element that another provides is a conflict', () => {
    expect(() => names({ elements: ['virtual', 'provides_virtual'] })).toThrow(
      /already provided by another element: ‘virtual’ \(by ‘provides_virtual’\)/,
    )
    expect(() => names({ elements: ['circular1', 'operating-system'] })).toThrow(
      /‘operating-system’ \(by ‘circular1’\)/,
    )
  })

  it('two providers of one name: the error names both', () => {
    expect(() => names({ elements: ['provides_virtual', 'also_provides_virtual', 'foo'] })).toThrow(
      /‘virtual’ is provided by both ‘also_provides_virtual’ and ‘provides_virtual’/,
    )
  })

  it('virtual names resolve whatever the order (diskimage-builder fails half the time here)', () => {
    expect(names({ elements: ['requires_new_virtual', 'provides_new_virtual'] })).toEqual([
      'provides_new_virtual',
      'requires_new_virtual',
    ])
    for (let i = 0; i < 5; i++)
      expect(names({ elements: ['virtual_first'] })).toEqual(['provides_new_virtual', 'virtual_first'])
  })

  it('needs an operating-system provider', () => {
    expect(() => names({ elements: ['provides_virtual'] })).toThrow('please include an operating system element')
  })

  it('names the element that asked for a missing one', () => {
    expect(() => names({ elements: ['foo', 'needs-missing'] })).toThrow(
      'element ‘ghost’ not found (required by ‘needs-missing’)',
    )
    expect(() => names({ elements: ['fake'] })).toThrow('element ‘fake’ not found (requested on the command line)')
    expect(() =>
      resolveElements(loadElementIndex([tree.path('override')]), { elements: ['override_element'] }),
    ).toThrow(/element ‘base’ not found \(added implicitly; use --skip-base/)
  })

  it('earlier element paths override later ones, and the override is reported', () => {
    const r = resolveElements(index, { skipBase: true, elements: ['override_element', 'foo'] })
    expect(r.elements.find((e) => e.name === 'override_element')?.dir).toBe(`${override}/override_element`)
    expect(index.overrides).toEqual([
      { name: 'override_element', used: `${override}/override_element`, ignored: `${base}/override_element` },
    ])
  })

  it('refuses element paths that do not exist or are not directories', () => {
    expect(() => loadElementIndex([base, '/not/a/dir'])).toThrow(ElementError)
    expect(() => loadElementIndex([base, '/not/a/dir'])).toThrow('element path ‘/not/a/dir’ does not exist')
    expect(() => loadElementIndex([`${base}/foo/element-provides`])).toThrow(/is not a directory/)
  })

  it('strips element-deps lines and drops blank ones', () => {
    expect(names({ elements: ['spaces-in-deps'] })).toEqual(['foo', 'spaces-in-deps'])
  })

  it('adds base, the ramdisk element and a block-device element like diskimage-builder', () => {
    const r = resolveElements(index, { elements: ['foo', 'vm'], ramdisk: true })
    expect(r.requested).toEqual(['ramdisk', 'base', 'foo', 'vm', 'block-device-mbr'])
    expect(r.ramdisk).toBe(true)
    expect(resolveElements(index, { elements: ['foo', 'vm'], arch: 'arm64' }).requested).toContain('block-device-efi')
    expect(resolveElements(index, { elements: ['foo', 'vm', 'block-device-gpt'] }).requested).not.toContain(
      'block-device-mbr',
    )
    expect(
      resolveElements(index, { elements: ['foo'], ramdisk: true, ramdiskElement: 'my-ramdisk' }).requested[0],
    ).toBe('my-ramdisk')
    expect(resolveElements(index, { elements: ['foo', 'ironic-agent'] }).ramdisk).toBe(true)
  })

  it('--exclude-element removes an element after expansion, keeping its deps', () => {
    const r = resolveElements(index, {
      skipBase: true,
      elements: ['requires-requires-foo'],
      excludeElements: ['requires-foo', 'nothere'],
    })
    expect(r.elements.map((e) => e.name)).toEqual(['foo', 'requires-requires-foo'])
    expect(r.excluded).toEqual(['requires-foo'])
  })

  it('rejects element names with / or ..', () => {
    expect(() => names({ elements: ['../etc'] })).toThrow('invalid element name ‘../etc’ in the element list')
    expect(() => names({ elements: ['foo'], excludeElements: ['a/b'] })).toThrow(/--exclude-element/)
  })

  it('records why each element is there', () => {
    const r = resolveElements(index, { elements: ['requires-foo'] })
    expect(Object.fromEntries(r.elements.map((e) => [e.name, e.reason]))).toEqual({
      base: { kind: 'implicit', why: 'base' },
      foo: { kind: 'dependency', of: 'requires-foo' },
      'requires-foo': { kind: 'requested' },
    })
  })
})
