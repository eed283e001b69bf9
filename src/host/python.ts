// Which python the elements get (DIB_PYTHON_EXEC): the one --python names, else the first on
// PATH that can import diskimage_builder, else any.
import { PrerequisiteError } from '../errors.js'
import { probeSync } from './spawn.js'
import { findExecutable } from './which.js'

export function resolvePython(requested: string | undefined, env: NodeJS.ProcessEnv): string {
  if (requested !== undefined) {
    const p = findExecutable(requested, env['PATH'])
    if (!p) throw new PrerequisiteError(`${requested} needed but not found`)
    return p
  }
  // divergence: the original requires `python`, which Debian 12 does not have. We prefer the
  // interpreter that can import diskimage_builder (host-side element scripts such as
  // package-installs-squash need it, as DIB_PYTHON_EXEC is DIB's own interpreter), then any python.
  const candidates = [
    ...new Set(['python', 'python3', '/usr/bin/python3'].map((n) => findExecutable(n, env['PATH']))),
  ].filter((p): p is string => p !== undefined)
  if (candidates.length === 0)
    throw new PrerequisiteError('python needed but not found', { hint: 'install python3 or use --python' })
  const withDib = candidates.find((p) => probeSync(p, ['-c', 'import diskimage_builder'], { env }))
  return withDib ?? candidates[0]!
}
