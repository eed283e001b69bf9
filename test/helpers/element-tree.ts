// Builds element directories in a temp dir from a compact spec, for element-engine tests.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

export interface ElementSpec {
  deps?: string[]
  provides?: string[]
  /** relative path -> content; a leading '!' in the content makes the file executable. */
  files?: Record<string, string>
  /** relative path -> symlink target */
  links?: Record<string, string>
}

export class TempTree {
  readonly root = mkdtempSync(join(tmpdir(), 'vdib-elements.'))

  path(...parts: string[]): string {
    return join(this.root, ...parts)
  }

  /** Creates `<root>/<dir>/<name>` elements; returns the element path. */
  elements(dir: string, specs: Record<string, ElementSpec>): string {
    const base = this.path(dir)
    mkdirSync(base, { recursive: true })
    for (const [name, spec] of Object.entries(specs)) {
      const el = join(base, name)
      mkdirSync(el, { recursive: true })
      if (spec.deps) writeFileSync(join(el, 'element-deps'), spec.deps.join('\n') + '\n')
      if (spec.provides) writeFileSync(join(el, 'element-provides'), spec.provides.join('\n') + '\n')
      for (const [rel, content] of Object.entries(spec.files ?? {})) {
        const f = join(el, rel)
        mkdirSync(dirname(f), { recursive: true })
        const exec = content.startsWith('!')
        writeFileSync(f, exec ? content.slice(1) : content)
        chmodSync(f, exec ? 0o755 : 0o644)
      }
      for (const [rel, target] of Object.entries(spec.links ?? {})) {
        const f = join(el, rel)
        mkdirSync(dirname(f), { recursive: true })
        symlinkSync(target, f)
      }
    }
    return base
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true })
  }
}
