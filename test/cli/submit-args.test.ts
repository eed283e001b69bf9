// `virt-dib submit`'s arguments: each mistake refused with one line and the hint to its --help,
// before any connection; an unreachable Redis in one line, quickly.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { runCli, runCliAsync } from '../helpers/cli.js'
import { freePort } from '../helpers/redis-server.js'

const dir = mkdtempSync(join(tmpdir(), 'vdib-submit-args.'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const file = join(dir, 'batch.yaml')
writeFileSync(
  file,
  `defaults:
  libPath: /dib/lib
  elementPaths: [/els]
builds:
  - name: one
    elements: [os]
`,
)
const HINT = 'Try ‘virt-dib submit --help’ or consult virt-dib(1) for more information.\n'
const URL = 'redis://127.0.0.1:1'

describe('virt-dib submit arguments', () => {
  it('--help says how to use it; the main --help names the verb', () => {
    const r = runCli(['submit', '--help'])
    expect(r.status).toBe(0)
    expect(r.stdout).toContain(' virt-dib submit --redis URL [--queue NAME] [--attempts N] FILE [--wait] [-q] [-v]')
    for (const o of ['--redis URL', '--queue NAME', '--attempts N', '--wait', '--machine-readable[=FORMAT]']) {
      expect(r.stdout).toContain(`  ${o}`)
    }
    expect(runCli(['--help']).stdout).toContain('virt-dib submit')
  })

  it.each([
    ['no file', ['--redis', URL], /^virt-dib: submit needs a batch file: virt-dib submit --redis URL FILE\n$/],
    ['two files', ['--redis', URL, file, file], /^virt-dib: submit takes one file, not 2: /],
    ['no --redis', [file], /^virt-dib: submit needs --redis URL: the Redis of the workers’ queue\n$/],
    ['--redis without its value', [file, '--redis'], /^virt-dib: submit: option '--redis' requires an argument\n$/],
    ['a URL of another scheme', ['--redis', 'http://h', file], /^virt-dib: --redis ‘http:\/\/h’: the scheme must/],
    ['not a URL', ['--redis', 'localhost', file], /^virt-dib: --redis ‘localhost’ is not a URL/],
    ['an unknown option', ['--redis', URL, file, '--jobs', '2'], /^virt-dib: submit: unrecognized option '--jobs'\n$/],
    ['--attempts 0', ['--redis', URL, '--attempts', '0', file], /^virt-dib: --attempts ‘0’ is not a number/],
    ['--attempts x', ['--redis', URL, '--attempts', 'x', file], /^virt-dib: --attempts ‘x’ is not a number/],
    ['a queue with :', ['--redis', URL, '--queue', 'a:b', file], /^virt-dib: --queue ‘a:b’: a queue name must not/],
    [
      '-q with -v',
      ['--redis', URL, file, '--wait', '-q', '-v'],
      /^virt-dib: submit: -q and -v contradict each other\n$/,
    ],
  ])('%s: one line and the hint, exit 1', async (_what, args, line) => {
    const r = await runCliAsync(['submit', ...args])
    expect(r.status).toBe(1)
    expect(r.stdout).toBe('')
    const [first, ...rest] = r.stderr.split(/(?<=\n)/)
    expect(first).toMatch(line)
    expect(rest.join('')).toBe(HINT)
  })

  it('a batch file with a problem: its error, nothing submitted', async () => {
    const bad = join(dir, 'bad.yaml')
    writeFileSync(bad, 'builds:\n  - name: one\n    fromats: [qcow2]\n')
    const r = await runCliAsync(['submit', '--redis', URL, bad])
    expect(r.status).toBe(1)
    expect(r.stderr).toContain(`virt-dib: error: ${bad}: builds[0].fromats: unknown key`)
  })

  it('Redis unreachable: one line within a few seconds', async () => {
    const port = await freePort()
    const t0 = Date.now()
    const r = await runCliAsync(['submit', '--redis', `redis://127.0.0.1:${port}`, file, '--wait'])
    expect(Date.now() - t0).toBeLessThan(10_000)
    expect(r.status).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(
      new RegExp(
        `^virt-dib: error: cannot reach Redis at redis://127.0.0.1:${port} within 5 s: [^\\n]+\\nvirt-dib: is`,
      ),
    )
    expect(r.stderr.split('\n')).toHaveLength(3) // the error, its hint, and the end
  })
})
