// runPhase end to end without an appliance: the events of the real runner on the host, and, with a
// fake handle, the live lines of the console (a script end the console missed is taken from the
// summary; a line arriving after the call's reply is still read).
import { EventEmitter } from 'node:events'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { ScriptError } from '../../../src/errors.js'
import type { Guestfs } from '../../../src/guestfs/index.js'
import { runPhase } from '../../../src/phases/runner/run-scripts.js'
import { formatControlFile } from '../../../src/phases/runner/control-file.js'
import { RUNNER_SCRIPT } from '../../../src/phases/runner/runner-script.js'
import type { EventInput, PhaseContext } from '../../../src/phases/types.js'

const dir = mkdtempSync(join(tmpdir(), 'vdib-run-phase.'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function context(g: unknown, events: EventInput[]): PhaseContext {
  return {
    g: g as Guestfs,
    token: 'TOK',
    signal: new AbortController().signal,
    emit: (e) => void events.push(e),
    controlFile: (p) => join(dir, `${p.hook}.ctl`),
    runnerPath: () => join(dir, 'run-phase'),
  }
}
const strip = (events: EventInput[]) =>
  events.map((e) => ('seconds' in e ? { ...e, seconds: 0 } : e)).filter((e) => e.kind !== 'appliance-log')

describe('runPhase', () => {
  it('turns the host runner’s lines into events and a failing script into a ScriptError', async () => {
    const hooks = join(dir, 'hooks')
    for (const [name, body] of [
      ['10-a', 'echo a'],
      ['20-b', 'echo b; echo b2 >&2; exit 4'],
    ]) {
      mkdirSync(join(hooks, 'install.d'), { recursive: true })
      writeFileSync(join(hooks, 'install.d', name!), `#!/bin/bash\n${body}\n`)
      chmodSync(join(hooks, 'install.d', name!), 0o755)
    }
    writeFileSync(join(dir, 'run-phase'), RUNNER_SCRIPT)
    writeFileSync(
      join(dir, 'install.d.ctl'),
      formatControlFile({
        hook: 'install.d',
        hooksDir: hooks,
        token: 'TOK',
        console: '',
        log: '',
        cwd: dir,
        exclude: [],
        trace: false,
        extraEnv: '',
        vars: [],
        elementArray: '',
        where: 'host',
      }),
    )
    const events: EventInput[] = []
    const host = { env: process.env, cwd: process.cwd() }
    const e = await runPhase(context(undefined, events), { hook: 'install.d', where: 'host' }, host).catch(
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(ScriptError)
    expect(e).toMatchObject({ hook: 'install.d', script: '20-b', status: 4, where: 'host' })
    const h = { hook: 'install.d' }
    expect(strip(events)).toEqual([
      { kind: 'phase-start', ...h, where: 'host' },
      { kind: 'script-start', ...h, script: '10-a' },
      { kind: 'script-output', ...h, script: '10-a', line: 'a' },
      { kind: 'script-end', ...h, script: '10-a', status: 0, seconds: 0 },
      { kind: 'script-start', ...h, script: '20-b' },
      { kind: 'script-output', ...h, script: '20-b', line: 'b' },
      { kind: 'script-output', ...h, script: '20-b', line: 'b2' },
      { kind: 'script-end', ...h, script: '20-b', status: 4, seconds: 0 },
      { kind: 'phase-end', ...h, where: 'host', seconds: 0, status: 4, scripts: ['10-a', '20-b'] },
    ])
  })

  it('reads the console in the appliance, the summary for what it missed, and lines after the reply', async () => {
    const g = new (class extends EventEmitter {
      async sh(): Promise<string> {
        this.emit('appliance', 'noise\r\nTOK|L|list|a b c\nTOK|L|start|a\nTOK|L|o|x\nTOK|L|end|a|0|1000\n')
        setTimeout(() => this.emit('appliance', 'TOK|L|start|c\nTOK|L|end|c|0|2000\n'), 100)
        return 'TOK|S|list|a b c\nTOK|S|end|a|0|1000\nTOK|S|end|b|0|500\nTOK|S|end|c|0|2000\nTOK|S|done|0\n'
      }
    })()
    const events: EventInput[] = []
    const r = await runPhase(context(g, events), { hook: 'install.d', where: 'chroot' })
    expect(r).toMatchObject({ scripts: ['a', 'b', 'c'], ran: [{ name: 'a' }, { name: 'b' }, { name: 'c' }] })
    expect(events.filter((e) => e.kind === 'appliance-log')).toEqual([{ kind: 'appliance-log', text: 'noise' }])
    const h = { hook: 'install.d' }
    expect(strip(events)).toEqual([
      { kind: 'phase-start', ...h, where: 'chroot' },
      { kind: 'script-start', ...h, script: 'a' },
      { kind: 'script-output', ...h, script: 'a', line: 'x' },
      { kind: 'script-end', ...h, script: 'a', status: 0, seconds: 0 },
      { kind: 'script-start', ...h, script: 'c' },
      { kind: 'script-end', ...h, script: 'c', status: 0, seconds: 0 },
      { kind: 'script-end', ...h, script: 'b', status: 0, seconds: 0 },
      { kind: 'phase-end', ...h, where: 'chroot', seconds: 0, status: 0, scripts: ['a', 'b', 'c'] },
    ])
    expect(g.listenerCount('appliance')).toBe(0)
  })
})
