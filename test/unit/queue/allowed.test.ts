// The worker's folder check: every path field of a job inside its allowed folders, compared as the
// kernel resolves them (a symlink or `..` cannot lead out), with a reason naming the field and path.
import { mkdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { realPathOf, refusedPath, resolveAllowed } from '../../../src/queue/allowed.js'
import { tempDir } from '../../helpers/temp.js'

const tmp = tempDir('vdib-allowed.')
const el = join(tmp, 'elements')
const lib = join(tmp, 'lib')
const out = join(tmp, 'out')
for (const d of [el, lib, out, join(tmp, 'secret')]) mkdirSync(d)
symlinkSync(join(tmp, 'secret'), join(out, 'link'))
// The allowed output folder as a symlink: what it leads to is allowed.
symlinkSync(out, join(tmp, 'out-link'))

const options = (o: Partial<BuildOptions> = {}): BuildOptions => ({
  elements: ['demo-os'],
  libPath: lib,
  elementPaths: [el, join(el, 'more')],
  name: join(out, 'img'),
  ...o,
})

describe('refusedPath', () => {
  it('accepts paths inside, also ones that do not exist yet', async () => {
    const allowed = await resolveAllowed({ elements: [el, lib], output: [out] })
    expect(await refusedPath(options(), allowed)).toBeUndefined()
    const deep = {
      name: join(out, 'a', 'b', 'img'),
      imageCache: join(out, 'cache'),
      drive: join(out, 'd', 'drive.img'),
    }
    expect(await refusedPath(options(deep), allowed)).toBeUndefined()
    expect(await refusedPath(options({ drive: join(out, 'drive.img') }), allowed)).toBeUndefined()
  })

  it('names the field, the path and the allowed folders', async () => {
    const allowed = await resolveAllowed({ elements: [el, lib], output: [out] })
    expect(await refusedPath(options({ elementPaths: [el, '/etc/x'] }), allowed)).toBe(
      `elementPaths: /etc/x is outside the allowed element folders (${el}, ${lib})`,
    )
    expect(await refusedPath(options({ libPath: out }), allowed)).toBe(
      `libPath: ${out} is outside the allowed element folders (${el}, ${lib})`,
    )
    expect(await refusedPath(options({ name: join(el, 'img') }), allowed)).toBe(
      `name: ${join(el, 'img')} is outside the allowed output folders (${out})`,
    )
    expect(await refusedPath(options({ imageCache: lib }), allowed)).toBe(
      `imageCache: ${lib} is outside the allowed output folders (${out})`,
    )
    expect(await refusedPath(options({ drive: '/var/d.img' }), allowed)).toBe(
      `drive: /var/d.img is outside the allowed output folders (${out})`,
    )
    // Mounted read-write: never inside the element folders (their scripts would be changed for every job).
    expect(await refusedPath(options({ drive: join(lib, 'drive.img') }), allowed)).toBe(
      `drive: ${join(lib, 'drive.img')} is outside the allowed output folders (${out})`,
    )
    expect(await refusedPath(options({ name: 'img' }), allowed)).toBe('name: img is not an absolute path')
    expect(await refusedPath(options({ name: undefined }), allowed)).toBe('name: a job must name its output path')
    // A folder that only starts like an allowed one.
    expect(await refusedPath(options({ name: `${out}x/img` }), allowed)).toMatch(/^name: .* is outside/)
  })

  it('follows symlinks and `..` as the kernel does', async () => {
    const allowed = await resolveAllowed({ elements: [el, lib], output: [out] })
    expect(await refusedPath(options({ name: join(out, 'link', 'img') }), allowed)).toBe(
      `name: ${join(out, 'link', 'img')} (it leads to ${join(tmp, 'secret', 'img')}) is outside the allowed output folders (${out})`,
    )
    // `link/..` is the link's parent: the secret folder's, not out.
    const dotdot = `${out}/link/../img`
    expect(await refusedPath(options({ name: dotdot }), allowed)).toContain(`(it leads to ${join(tmp, 'img')})`)
    expect(await realPathOf(`${out}/new/../img`)).toBe(join(out, 'img'))
    // Allowed through a symlink: what it leads to.
    const viaLink = await resolveAllowed({ elements: [el, lib], output: [join(tmp, 'out-link')] })
    expect(viaLink.output).toEqual([out])
    expect(await refusedPath(options(), viaLink)).toBeUndefined()
  })

  it('does not check a base’s name (the worker writes it elsewhere)', async () => {
    const allowed = await resolveAllowed({ elements: [el, lib], output: [out] })
    expect(await refusedPath(options({ name: '/elsewhere/base' }), allowed, { output: false })).toBeUndefined()
    expect(await refusedPath(options({ elementPaths: ['/etc'] }), allowed, { output: false })).toMatch(
      /^elementPaths: \/etc is outside/,
    )
  })
})
