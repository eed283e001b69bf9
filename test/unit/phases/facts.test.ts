// Every phase file states its own facts, and they are diskimage-builder's (written out here
// independently): TARGET_ROOT for root.d and cleanup.d, the block device from pre-finalise.d on,
// DIB_IMAGE_SIZE from block-device.d on. extra-packages runs as install.d does.
import { readdirSync } from 'node:fs'

import { describe, expect, it } from 'vitest'

import {
  extraPackages,
  extraPackagesProgress,
  extraPackagesScript,
  runsExtraPackages,
} from '../../../src/phases/extra-packages.js'
import { install } from '../../../src/phases/install.js'
import { PHASES } from '../../../src/phases/registry.js'
import type { Phase } from '../../../src/phases/types.js'
import { DIB_PHASE_ORDER } from '../../helpers/phases.js'

const FACTS = ['hook', 'where', 'cwd', 'seesTargetRoot', 'afterBlockDevice', 'seesImageSize'] as const
const NOT_PHASES = new Set(['registry.ts', 'types.ts', 'extra-packages.ts'])

describe('phase facts', () => {
  it('are stated in every phase file, and every phase file is in the registry', async () => {
    const dir = new URL('../../../src/phases/', import.meta.url)
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts') && !NOT_PHASES.has(f))
    expect(files).toHaveLength(PHASES.length)
    for (const f of files) {
      const mod = (await import(new URL(f, dir).href)) as Record<string, Phase>
      const [p, ...more] = Object.values(mod)
      expect(more, f).toEqual([])
      expect(Object.keys(p!).sort(), f).toEqual([...FACTS].sort())
      expect(p!.hook, f).toBe(f.replace(/\.ts$/, '.d'))
      expect(PHASES, f).toContain(p)
    }
  })

  it('are diskimage-builder’s', () => {
    const at = (hook: string) => DIB_PHASE_ORDER.indexOf(hook as (typeof DIB_PHASE_ORDER)[number])
    for (const p of PHASES) {
      expect(p.seesTargetRoot, p.hook).toBe(p.hook === 'root.d' || p.hook === 'cleanup.d')
      expect(p.afterBlockDevice, p.hook).toBe(at(p.hook) > at('block-device.d'))
      expect(p.seesImageSize, p.hook).toBe(at(p.hook) >= at('block-device.d'))
      expect(p.cwd, p.hook).toBe(p.hook === 'cleanup.d' ? 'out' : p.hook === 'extra-data.d' ? 'caller' : '/')
    }
  })

  it('make extra-packages an install.d in its own scripts directory, run only with packages', () => {
    expect(extraPackages).toEqual({ ...install, hook: 'extra-packages', scriptsDir: 'run/extra-packages' })
    expect(runsExtraPackages([])).toBe(false)
    expect(runsExtraPackages(['a'])).toBe(true)
    expect(extraPackagesScript(['pkg-a', "pkg b'c"])).toEqual({
      name: '00-install-packages',
      content: `#!/bin/bash\nset -eu\ninstall-packages 'pkg-a' 'pkg b'\\''c'\n`,
    })
    expect(extraPackagesProgress(['a', 'b'])).toBe('Installing: a b')
  })
})
