// --help, --long-options, --short-options: laid out like the original (options sorted by their
// first key, case-insensitively; descriptions at column 38).
import { FLAGS } from './flags.js'

const PROLOGUE = `virt-dib: run diskimage-builder elements to generate images

 virt-dib -B DIB-LIB -p ELEMENTS-PATH elements...
 virt-dib cache list|prune ...   (the step cache: virt-dib cache --help)
 virt-dib batch FILE [-j N] ...  (many builds from one file: virt-dib batch --help)
 virt-dib worker --redis URL ... (builds taken from a queue: virt-dib worker --help)
 virt-dib submit --redis URL ... (builds sent to workers: virt-dib submit --help)

A short summary of the options is given below.  For detailed help please
read the man page virt-dib(1) and this project's README.

Options:
`

export function helpText(): string {
  const rows = FLAGS.filter((f) => !f.hidden)
    .map((f) => {
      const keys = f.keys.join(', ')
      const arg = f.arg ? ` ${f.arg}` : f.optionalArg !== undefined ? `[=${f.optionalArg}]` : ''
      return { sort: (f.sortAs ?? f.keys[0]!.replace(/^-+/, '')).toLowerCase(), left: `  ${keys}${arg}`, help: f.help }
    })
    .sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0))
  const lines = rows.map((r) =>
    r.left.length < 38 ? `${r.left.padEnd(38)}${r.help}` : `${r.left}\n${' '.repeat(38)}${r.help}`,
  )
  return PROLOGUE + lines.join('\n') + '\n'
}

export function longOptionsText(): string {
  return (
    FLAGS.flatMap((f) => f.keys.filter((k) => k.startsWith('--')))
      .sort()
      .join('\n') + '\n'
  )
}

export function shortOptionsText(): string {
  return (
    FLAGS.flatMap((f) => f.keys.filter((k) => !k.startsWith('--')))
      .sort()
      .join('\n') + '\n'
  )
}
