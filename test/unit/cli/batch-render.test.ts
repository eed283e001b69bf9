// `virt-dib batch` output without a build: prefixed lines, the live block under a fake TTY (read
// back through a tiny terminal), JSON lines tagged with the build, and the summary table.
import { afterEach, describe, expect, it, vi } from 'vitest'

import type { BatchEvent, BuildOutcome } from '../../../src/batch/types.js'
import {
  createBatchRenderer,
  formatSummary,
  phaseRange,
  type BatchRenderOptions,
} from '../../../src/cli/batch-render.js'
import { ScriptError, VirtDibError } from '../../../src/errors.js'

function setup(o: Partial<BatchRenderOptions> = {}) {
  let out = ''
  const stream = { write: (t: string) => ((out += t), true), columns: 50 }
  const r = createBatchRenderer({
    names: ['cloud', 'metal', 'cloud-dev'],
    color: false,
    quiet: false,
    debug: false,
    verbose: false,
    live: false,
    out: stream as unknown as BatchRenderOptions['out'],
    ...o,
  })
  return { r, out: () => out }
}

const ESC = String.fromCharCode(27)
const CSI = new RegExp(`^${ESC}\\[(\\d*)([AJ])`)
const SGR = new RegExp(`${ESC}\\[[0-9;]*m`, 'g')

/** What a terminal shows after `text`: handles \n, \r, CSI n A (up) and CSI J (clear below). */
function screen(text: string): string[] {
  const rows: string[] = ['']
  let row = 0
  let col = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (c === '\x1b') {
      const m = CSI.exec(text.slice(i))
      if (!m) throw new Error(`unexpected escape at ${i}: ${JSON.stringify(text.slice(i, i + 8))}`)
      if (m[2] === 'A') row = Math.max(0, row - Number(m[1] || 1))
      else {
        rows.length = row + 1
        rows[row] = rows[row]!.slice(0, col)
      }
      i += m[0].length - 1
    } else if (c === '\r') col = 0
    else if (c === '\n') {
      row++
      col = 0
      if (rows.length <= row) rows.push('')
    } else {
      const line = rows[row]!
      rows[row] = line.slice(0, col) + c + line.slice(col + 1)
      col++
    }
  }
  if (rows.at(-1) === '') rows.pop()
  return rows
}

const ev = (e: BatchEvent) => e

describe('batch output without a TTY', () => {
  it("prefixes every line of the single build's renderer with the build's name", () => {
    const { r, out } = setup()
    r.onEvent(ev({ kind: 'build-start', build: 'cloud', elapsed: 0 }))
    r.onEvent(ev({ kind: 'script-start', build: 'cloud', elapsed: 12.34, hook: 'install.d', script: '10-foo' }))
    r.onEvent(
      ev({ kind: 'script-output', build: 'cloud', elapsed: 12.4, hook: 'install.d', script: '10-foo', line: 'hi' }),
    )
    r.onEvent(ev({ kind: 'progress', build: 'metal', elapsed: 1, text: 'Opening the disks' }))
    r.onEvent(ev({ kind: 'warning', build: 'metal', elapsed: 2, text: 'careful' }))
    r.onEvent(ev({ kind: 'build-end', build: 'cloud', elapsed: 20, status: 'ok', seconds: 19.96 }))
    r.onEvent(ev({ kind: 'build-end', build: 'metal', elapsed: 21, status: 'failed', seconds: 3, reason: 'boom' }))
    r.onEvent(
      ev({
        kind: 'build-end',
        build: 'cloud-dev',
        elapsed: 21,
        status: 'skipped',
        seconds: 0,
        reason: 'its base ‘metal’ failed',
      }),
    )
    r.close()
    expect(out()).toBe(
      [
        '[cloud] [  12.3] Running: install.d/10-foo',
        '[cloud] hi',
        '[metal] [   1.0] Opening the disks',
        '[metal] virt-dib: warning: careful',
        '[cloud] finished in 20.0 s',
        '[metal] failed after 3.0 s: boom',
        '[cloud-dev] skipped: its base ‘metal’ failed',
        '',
      ].join('\n'),
    )
  })

  it('-q keeps warnings, script output and what went wrong, not progress or successes', () => {
    const { r, out } = setup({ quiet: true })
    r.onEvent(ev({ kind: 'progress', build: 'cloud', elapsed: 1, text: 'Opening the disks' }))
    r.onEvent(ev({ kind: 'warning', build: 'cloud', elapsed: 2, text: 'careful' }))
    r.onEvent(ev({ kind: 'build-end', build: 'cloud', elapsed: 20, status: 'ok', seconds: 19 }))
    r.onEvent(ev({ kind: 'build-end', build: 'metal', elapsed: 21, status: 'failed', seconds: 3, reason: 'boom' }))
    expect(out()).toBe('[cloud] virt-dib: warning: careful\n[metal] failed after 3.0 s: boom\n')
  })

  it('--machine-readable: every event as a JSON line with its build, lifecycle events too', () => {
    const lines: string[] = []
    const { r } = setup({ quiet: true, machine: { write: (t: string) => lines.push(t) } })
    r.onEvent(ev({ kind: 'build-start', build: 'cloud', elapsed: 0 }))
    r.onEvent(ev({ kind: 'phase-start', build: 'cloud', elapsed: 1, hook: 'root.d', where: 'host' }))
    r.onEvent(ev({ kind: 'build-end', build: 'cloud', elapsed: 9, status: 'ok', seconds: 9 }))
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines.every((l) => l.endsWith('\n'))).toBe(true)
    expect(parsed.map((p) => [p['kind'], p['build']])).toEqual([
      ['build-start', 'cloud'],
      ['phase-start', 'cloud'],
      ['build-end', 'cloud'],
    ])
    expect(typeof parsed[0]!['timestamp']).toBe('string')
  })
})

describe('the live block on a TTY', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('one line per running build (name, what it does, elapsed) and the finished count, redrawn in place', () => {
    vi.useFakeTimers()
    const { r, out } = setup({ live: true })
    r.onEvent(ev({ kind: 'build-start', build: 'cloud', elapsed: 0 }))
    r.onEvent(ev({ kind: 'build-start', build: 'metal', elapsed: 0 }))
    vi.advanceTimersByTime(1000)
    r.onEvent(ev({ kind: 'phase-start', build: 'cloud', elapsed: 1, hook: 'install.d', where: 'chroot' }))
    r.onEvent(ev({ kind: 'script-output', build: 'cloud', elapsed: 1, hook: 'install.d', script: 'x', line: 'noise' }))
    vi.advanceTimersByTime(2500)
    expect(screen(out())).toEqual([
      'cloud      install.d                        3.5 s',
      'metal      starting                         3.5 s',
      '0/3 finished',
    ])
    expect(out()).not.toContain('noise')
    // A line that must be seen goes above the block; the block follows it.
    r.onEvent(ev({ kind: 'warning', build: 'metal', elapsed: 4, text: 'careful' }))
    r.onEvent(ev({ kind: 'build-end', build: 'cloud', elapsed: 5, status: 'ok', seconds: 4 }))
    expect(screen(out())).toEqual([
      '[metal] virt-dib: warning: careful',
      '[cloud] finished in 4.0 s',
      'metal      starting                         3.5 s',
      '1/3 finished',
    ])
    r.close()
    expect(screen(out())).toEqual(['[metal] virt-dib: warning: careful', '[cloud] finished in 4.0 s'])
  })

  it('redraws at most every refreshMs on its own, whatever the number of events', () => {
    vi.useFakeTimers()
    const { r, out } = setup({ live: true, refreshMs: 250 })
    r.onEvent(ev({ kind: 'build-start', build: 'cloud', elapsed: 0 }))
    const before = out().length
    for (let i = 0; i < 100; i++) {
      r.onEvent(ev({ kind: 'progress', build: 'cloud', elapsed: 0, text: `step ${i}` }))
    }
    expect(out().length).toBe(before) // all within the first 250 ms
    vi.advanceTimersByTime(250)
    expect(screen(out())[0]).toContain('step 99')
    r.close()
  })

  it('a long phase text is cut to the terminal width', () => {
    vi.useFakeTimers()
    const { r, out } = setup({ live: true })
    r.onEvent(ev({ kind: 'build-start', build: 'cloud', elapsed: 0 }))
    vi.advanceTimersByTime(300)
    r.onEvent(ev({ kind: 'progress', build: 'cloud', elapsed: 0, text: 'x'.repeat(200) }))
    vi.advanceTimersByTime(300)
    const first = screen(out())[0]!
    expect(first.length).toBeLessThanOrEqual(49)
    expect(first).toContain('…')
    expect(first.endsWith(' s')).toBe(true)
    r.close()
  })
})

describe('the summary table', () => {
  const result = (paths: string[]) => ({
    outputs: paths.map((path) => ({ format: 'qcow2', path, size: 1 })),
    seconds: 1,
  })
  const outcomes: BuildOutcome[] = [
    {
      name: 'cloud',
      status: 'ok',
      result: result(['/w/out/cloud.qcow2', '/elsewhere/cloud.raw']),
      seconds: 62.04,
      reused: [],
    },
    {
      name: 'small',
      status: 'ok',
      result: result(['/w/out/small.qcow2']),
      seconds: 8,
      reused: ['root.d', 'extra-data.d', 'pre-install.d', 'install.d'],
    },
    {
      name: 'metal',
      status: 'failed',
      error: new ScriptError({
        hook: 'install.d',
        script: '10-x',
        status: 1,
        where: 'chroot',
        logPath: '/l/x.log',
        outputTail: ['1', '2', '3', '4', '5', 'E: no such package'],
      }),
      seconds: 3.3,
      reused: ['root.d'],
    },
    { name: 'metal-dev', status: 'skipped', reason: 'its base ‘metal’ failed' },
  ]

  it('build, result, seconds, outputs and reused phases; the error or the reason under a build that did not finish', () => {
    expect(formatSummary(outcomes, { color: false, cwd: '/w' })).toBe(
      [
        'BUILD      RESULT   SECONDS  OUTPUTS                               REUSED',
        'cloud      ok          62.0  out/cloud.qcow2 /elsewhere/cloud.raw  -',
        'small      ok           8.0  out/small.qcow2                       root.d … install.d',
        'metal      failed       3.3  -                                     root.d',
        '    error: install.d/10-x failed with exit status 1 (in the image chroot)',
        '    last lines of install.d/10-x:',
        '      2',
        '      3',
        '      4',
        '      5',
        '      E: no such package',
        '    the full log is in /l/x.log',
        'metal-dev  skipped        -  -                                     -',
        '    its base ‘metal’ failed',
        '4 builds: 2 ok, 1 failed, 1 skipped',
        '',
      ].join('\n'),
    )
  })

  it('colours the result only, keeping the columns', () => {
    const text = formatSummary([outcomes[2]!], { color: true, cwd: '/w' })
    expect(text).toContain('\x1b[1;31mfailed\x1b[0m')
    expect(text.replace(SGR, '')).toBe(formatSummary([outcomes[2]!], { color: false, cwd: '/w' }))
  })

  it('an error that is not a script failure: its one line and its hint', () => {
    const e = new VirtDibError('the disk is full\nmore', { hint: 'give it room' })
    const text = formatSummary([{ name: 'a', status: 'failed', error: e, seconds: 1, reused: [] }], { color: false })
    expect(text).toContain('\n    error: the disk is full\n    give it room\n')
  })

  it('phase ranges', () => {
    expect(phaseRange([])).toBe('-')
    expect(phaseRange(['root.d'])).toBe('root.d')
    expect(phaseRange(['root.d', 'install.d', 'post-install.d'])).toBe('root.d … post-install.d')
  })
})
