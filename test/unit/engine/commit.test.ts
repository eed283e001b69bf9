// Committing several outputs is all or nothing: a failure midway (a rename that fails, a final
// path that is a directory) leaves every older output as it was, and the new ones at their temp
// names for the usual cleanup.
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { rename } from 'node:fs/promises'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { commitStaged, type CommitFs, type StagedPath } from '../../../src/engine/commit.js'
import { VirtDibError } from '../../../src/errors.js'
import { openExportContext } from '../../helpers/fake-guest.js'
import { tempDir } from '../../helpers/temp.js'

/** An output directory with a previous build (img.qcow2, img.tar, img.d/{a,b}) and a new one staged. */
function setUp(): { out: string; staged: StagedPath[]; before: Record<string, string> } {
  const out = tempDir('vdib-commit.')
  const before: Record<string, string> = {
    'img.qcow2': 'old qcow2',
    'img.tar': 'old tar',
    'img.tar.md5': 'old md5',
    'img.d/a': 'old a',
    'img.d/b': 'old b (not in the new build)',
  }
  mkdirSync(join(out, 'img.d'))
  for (const [f, c] of Object.entries(before)) writeFileSync(join(out, f), c)
  const staged: StagedPath[] = []
  const stage = (final: string, content: string | Record<string, string>) => {
    const temp = join(out, `.${final}.vdib-test.tmp`)
    if (typeof content === 'string') writeFileSync(temp, content)
    else {
      mkdirSync(temp)
      for (const [f, c] of Object.entries(content)) writeFileSync(join(temp, f), c)
    }
    staged.push({ temp, final: join(out, final) })
  }
  stage('img.qcow2', 'new qcow2')
  stage('img.d', { a: 'new a', c: 'new c' })
  stage('img.tar', 'new tar')
  stage('img.tar.md5', 'new md5')
  return { out, staged, before }
}

/** Every file under `dir` (hidden ones too) with its content. */
function contents(dir: string, prefix = ''): Record<string, string> {
  const r: Record<string, string> = {}
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e)
    if (statSync(p).isDirectory()) Object.assign(r, contents(p, `${prefix}${e}/`))
    else r[`${prefix}${e}`] = readFileSync(p, 'utf8')
  }
  return r
}

/** Real renames, except the `n`th one (1-based), which fails like a full or read-only disk. */
function failingRename(n: number): CommitFs {
  let calls = 0
  return {
    rename: async (from, to) => {
      if (++calls === n) throw Object.assign(new Error(`EIO: i/o error, rename '${from}' -> '${to}'`), { code: 'EIO' })
      await rename(from, to)
    },
  }
}

/** Real renames, except the calls numbered in `fail` (1-based). */
function failingRenames(...fail: number[]): CommitFs {
  let calls = 0
  return {
    rename: async (from, to) => {
      if (fail.includes(++calls))
        throw Object.assign(new Error(`EIO: i/o error, rename '${from}' -> '${to}'`), { code: 'EIO' })
      await rename(from, to)
    },
  }
}

describe('committing outputs', () => {
  it('a file from before that cannot be renamed back: the first error is kept, the hint says where the file is', async () => {
    const { out, staged } = setUp()
    // 1: img.qcow2 aside, 2: the new one in (fails), 3: the old one back (fails too)
    const e = await commitStaged(staged, failingRenames(2, 3)).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(
      `cannot put the output ‘${out}/img.qcow2’ in place: EIO: i/o error, rename '${out}/.img.qcow2.vdib-test.tmp' -> '${out}/img.qcow2'`,
    )
    const hint = (e as VirtDibError).hint ?? ''
    const m =
      /^some files from before could not be put back: ‘(.*)’ is left at ‘(\.img\.qcow2\.vdib-[0-9a-f]{8}\.old)’/.exec(
        hint,
      )
    expect(m, hint).not.toBeNull()
    expect(m![1]).toBe(`${out}/img.qcow2`)
    expect(readFileSync(join(out, m![2]!), 'utf8')).toBe('old qcow2')
    expect(hint).not.toMatch(/no output was replaced/)
  })

  it('a restore failing during the roll back is named too', async () => {
    const { out, staged } = setUp()
    // 6: img.tar aside fails; rolling back: 7 img.d/c out, 8 img.d/a out, 9 the old img.d/a back (fails)
    const e = await commitStaged(staged, failingRenames(6, 9)).catch((x: unknown) => x)
    expect((e as Error).message).toMatch(new RegExp(`^cannot put the output ‘${out}/img.tar’ in place: EIO`))
    const hint = (e as VirtDibError).hint ?? ''
    expect(hint).toMatch(
      new RegExp(
        `^some files from before could not be put back: ‘${out}/img.d/a’ is left at ‘\\.a\\.vdib-[0-9a-f]{8}\\.old’`,
      ),
    )
    const now = contents(out)
    expect(now['img.qcow2']).toBe('old qcow2')
    expect(Object.entries(now).filter(([f, c]) => f.startsWith('img.d/.a.vdib-') && c === 'old a')).toHaveLength(1)
  })

  it('replaces every old output, merges $NAME.d, leaves no hidden name', async () => {
    const { out, staged } = setUp()
    await commitStaged(staged)
    expect(contents(out)).toEqual({
      'img.qcow2': 'new qcow2',
      'img.tar': 'new tar',
      'img.tar.md5': 'new md5',
      'img.d/a': 'new a',
      'img.d/b': 'old b (not in the new build)', // compat: merged into, as the original
      'img.d/c': 'new c',
    })
  })

  for (const n of [2, 3, 5, 7, 8]) {
    it(`a rename failing midway (call ${n}): every old output intact, the new ones back at their temp names`, async () => {
      const { out, staged, before } = setUp()
      const stagedBefore = contents(out)
      const e = await commitStaged(staged, failingRename(n)).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(VirtDibError)
      expect((e as Error).message).toMatch(/^cannot put the output ‘.*’ in place: EIO: i\/o error, rename/)
      expect((e as VirtDibError).hint).toMatch(/no output was replaced/)
      const now = contents(out)
      for (const [f, c] of Object.entries(before)) expect(now[f], f).toBe(c)
      expect(now).toEqual(stagedBefore) // the temp names are back, no .old left
    })
  }

  it('the final path of an output being a non-empty directory: refused, earlier outputs rolled back', async () => {
    const { out, staged, before } = setUp()
    rmSync(join(out, 'img.tar'))
    mkdirSync(join(out, 'img.tar'))
    writeFileSync(join(out, 'img.tar', 'keep'), 'a user file')
    const e = await commitStaged(staged).catch((x: unknown) => x)
    expect((e as Error).message).toBe(
      `cannot put the output ‘${out}/img.tar’ in place: ‘${out}/img.tar’ is a directory`,
    )
    const now = contents(out)
    expect(now['img.qcow2']).toBe(before['img.qcow2'])
    expect(now['img.d/a']).toBe(before['img.d/a'])
    expect(now['img.d/c']).toBeUndefined()
    expect(now['img.tar/keep']).toBe('a user file')
    expect(Object.keys(now).filter((f) => f.includes('.old'))).toEqual([])
  })

  it('through BuildContext: a failed commit leaves the old outputs, and cleanup then removes every temp name', async () => {
    const out = tempDir('vdib-commit.')
    writeFileSync(join(out, 'img.qcow2'), 'old qcow2')
    mkdirSync(join(out, 'img.tar'))
    writeFileSync(join(out, 'img.tar', 'x'), 'x')
    const ctx = await openExportContext(out, tempDir('vdib-committmp.'), ['qcow2', 'tar'])
    writeFileSync(ctx.stage(join(out, 'img.qcow2'), 'qcow2').temp, 'new qcow2')
    writeFileSync(ctx.stage(join(out, 'img.tar'), 'tar').temp, 'new tar')
    await expect(ctx.commitOutputs()).rejects.toThrow(/img\.tar’ is a directory/)
    await ctx.cleanup.run()
    expect(contents(out)).toEqual({ 'img.qcow2': 'old qcow2', 'img.tar/x': 'x' })
  })
})
