// What every failure must leave as it found it: no qemu process of ours, no temp directory,
// the files that were there before unchanged (content and mtime), and nothing new in the output
// directory unless the case allows it. One snapshot before, one check after.
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

import { expect } from 'vitest'

import { allQemuPids, waitFor } from './processes.js'

export interface Snapshot {
  qemu: Set<number>
  tmpEntries: string[]
  files: Map<string, { hash: string; mtimeMs: number }>
  /** Every name in the output directory before (directories too). */
  names: Set<string>
  outDir: string
  tmpDir: string
}

function hashFile(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex')
}

/** Before a case: `tmpDir` is the TMPDIR the build gets, `outDir` where its outputs go. */
export function snapshot(outDir: string, tmpDir: string): Snapshot {
  const files = new Map<string, { hash: string; mtimeMs: number }>()
  for (const f of readdirSync(outDir)) {
    const p = join(outDir, f)
    if (statSync(p).isFile()) files.set(f, { hash: hashFile(p), mtimeMs: statSync(p).mtimeMs })
  }
  const names = new Set(readdirSync(outDir))
  return { qemu: new Set(allQemuPids()), tmpEntries: readdirSync(tmpDir).sort(), files, names, outDir, tmpDir }
}

/** After a case: asserts every invariant; `allowNew` names output files the case may leave. */
export async function expectNothingLeft(s: Snapshot, allowNew: (name: string) => boolean = () => false): Promise<void> {
  expect(await waitFor(() => allQemuPids().every((p) => s.qemu.has(p)), 20_000), 'a qemu process was left').toBe(true)
  expect(readdirSync(s.tmpDir).sort(), 'temp directories left in TMPDIR').toEqual(s.tmpEntries)
  for (const [f, before] of s.files) {
    const p = join(s.outDir, f)
    expect(hashFile(p), `${f} was changed`).toBe(before.hash)
    expect(statSync(p).mtimeMs, `${f} was touched`).toBe(before.mtimeMs)
  }
  const added = readdirSync(s.outDir).filter((f) => !s.names.has(f) && !allowNew(f))
  expect(added, 'files left in the output directory').toEqual([])
}
