// BuildOptions for planning the demo elements in a temp dir (unit tests that plan, never launch).
import { join } from 'node:path'

import type { BuildOptions } from '../../src/api/options.js'
import { DIB_LIB, root } from './cli.js'

/** demo-os from examples/elements, output and HOME under `tmp`, python3; `o` overrides. */
export function demoOptions(tmp: string, o: Partial<BuildOptions> = {}): BuildOptions {
  return {
    elements: ['demo-os'],
    libPath: DIB_LIB,
    elementPaths: [join(root, 'examples', 'elements')],
    skipBase: true,
    name: join(tmp, 'img'),
    python: 'python3',
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: tmp },
    ...o,
  }
}
