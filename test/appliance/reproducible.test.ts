// SOURCE_DATE_EPOCH: the demo built twice — other output folders, --smp 1 and 2, the host's tree
// reader and the guest's tar — gives byte-identical tree outputs and checksum files. On a
// difference the failure says what differs (diffoscope when installed, else tar's listings).
import { execFile, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { beforeAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root } from '../helpers/cli.js'
import { qemuDescendants } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'
import { findExecutable } from '../../src/host/which.js'

const EPOCH = '1700000000'
const OUTPUTS = ['demo.tar', 'demo.tgz', 'demo.squash']
const FILES = OUTPUTS.flatMap((o) => [o, `${o}.md5`, `${o}.sha256`])

/** Async: a synchronous child would block the test worker's messages to vitest for the whole build. */
async function build(dir: string, smp: number, env: NodeJS.ProcessEnv = {}): Promise<void> {
  const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
    execFile(
      process.execPath,
      // prettier-ignore
      [
      join(root, 'bin', 'virt-dib'), '-B', DIB_LIB, '-p', join(root, 'examples', 'elements'), '--skip-base',
      '--size', '1G', '--formats', 'tar,tgz,squashfs', '--checksum', '--smp', String(smp),
      '--name', join(dir, 'demo'), 'demo-os', 'demo-app',
    ],
      { encoding: 'utf8', env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH, ...env }, timeout: 900_000 },
      (e, stdout, stderr) => done({ status: e ? ((e as { code?: number }).code ?? null) : 0, stdout, stderr }),
    )
  })
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0)
}

/** What differs between two files, in a few lines. */
function difference(a: string, b: string): string {
  const diffoscope = findExecutable('diffoscope')
  const r = diffoscope
    ? spawnSync(diffoscope, ['--text', '-', '--max-report-size', '20000', a, b], { encoding: 'utf8' })
    : spawnSync('sh', ['-c', 'diff <(tar --full-time -tvf "$1") <(tar --full-time -tvf "$2")', '_', a, b], {
        encoding: 'utf8',
      })
  return `${a} and ${b} differ:\n${(r.stdout || r.stderr).slice(0, 20000)}`
}

describe('a build with SOURCE_DATE_EPOCH', () => {
  const tmp = tempDir('vdib-repro-')
  const [a, b, c] = ['a', 'b', 'c'].map((d) => join(tmp, d))

  beforeAll(async () => {
    for (const d of [a, b, c]) mkdirSync(d!)
    await build(a!, 1)
    await build(b!, 2)
    await build(c!, 1, { VIRT_DIB_TREE_READER: 'guest' })
  }, 1_800_000)

  it.each(FILES)('gives the same %s in another folder with another --smp', (f) => {
    const [x, y] = [join(a!, f), join(b!, f)]
    expect(readFileSync(x).equals(readFileSync(y)), difference(x, y)).toBe(true)
  })

  it('gives the same tar whether the host or the guest read the tree', () => {
    const [x, y] = [join(a!, 'demo.tar'), join(c!, 'demo.tar')]
    expect(readFileSync(x).equals(readFileSync(y)), difference(x, y)).toBe(true)
  })

  it('clamps every time to the epoch, and the elements saw it', () => {
    const tar = join(a!, 'demo.tar')
    const stamp = spawnSync('tar', ['-xOf', tar, './etc/demo-built'], { encoding: 'utf8' }).stdout
    expect(stamp).toBe('built by virt-dib at 2023-11-14T22:13:20Z\n')
    const listing = spawnSync('tar', ['--full-time', '-tvf', tar], { encoding: 'utf8', env: { TZ: 'UTC' } }).stdout
    const times = listing
      .trim()
      .split('\n')
      .map((l) => /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.exec(l)![0])
    expect(
      times.every((t) => t <= '2023-11-14 22:13:20'),
      listing,
    ).toBe(true)
    expect(qemuDescendants()).toEqual([])
  })
})
