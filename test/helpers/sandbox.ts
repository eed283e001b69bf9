// A sandbox for CLI runs that must stop before launch: a hypervisor script that only leaves a
// marker (so a test can tell that something tried to launch), and per-case folders with an older
// output in place. The whole sandbox is removed after the file's tests.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll } from 'vitest'

/** Writes `dir/hv.sh`, which touches $VDIB_TEST_MARKER and fails; returns its path. */
export function markerHypervisor(dir: string): string {
  const hv = join(dir, 'hv.sh')
  writeFileSync(hv, '#!/bin/sh\ntouch "$VDIB_TEST_MARKER"\nexit 1\n')
  chmodSync(hv, 0o755)
  return hv
}

export interface SandboxPlace {
  /** Output directory, holding `img.qcow2` from "an older build". */
  out: string
  /** The case's TMPDIR. */
  tmp: string
  /** Exists once anything ran the hypervisor. */
  marker: string
  env: NodeJS.ProcessEnv
}

export function cliSandbox(prefix: string): { base: string; hv: string; place: (name: string) => SandboxPlace } {
  const base = mkdtempSync(join(tmpdir(), prefix))
  afterAll(() => rmSync(base, { recursive: true, force: true }))
  const hv = markerHypervisor(base)
  const place = (name: string): SandboxPlace => {
    const out = join(base, name, 'out')
    const tmp = join(base, name, 'tmp')
    mkdirSync(out, { recursive: true })
    mkdirSync(tmp, { recursive: true })
    writeFileSync(join(out, 'img.qcow2'), 'an older build')
    const marker = join(base, name, 'launched')
    return { out, tmp, marker, env: { ...process.env, TMPDIR: tmp, LIBGUESTFS_HV: hv, VDIB_TEST_MARKER: marker } }
  }
  return { base, hv, place }
}
