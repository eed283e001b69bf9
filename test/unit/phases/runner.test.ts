// The runner protocol without an appliance: the control file is data, the runner applies
// dib-run-parts' rules, and the summary parser reads what it prints. Runs the real runner with bash.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { runProcess } from '../../../src/host/spawn.js'
import { formatControlFile } from '../../../src/phases/runner/control-file.js'
import { parseSummary } from '../../../src/phases/runner/run-scripts.js'
import { RUNNER_SCRIPT } from '../../../src/phases/runner/runner-script.js'

describe('phase runner', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdib-runner.'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const hooks = join(dir, 'hooks')
  const script = (rel: string, body: string, mode = 0o755) => {
    const p = join(hooks, rel)
    mkdirSync(join(p, '..'), { recursive: true })
    writeFileSync(p, body)
    chmodSync(p, mode)
  }
  writeFileSync(join(dir, 'run-phase'), RUNNER_SCRIPT)
  script('install.d/10-b', '#!/bin/bash\necho "b: $PROBE $ORDER"\n')
  script('install.d/05-a', '#!/bin/bash\necho a-out; echo a-err >&2\n')
  script('install.d/zz', '#!/bin/bash\necho zz; pwd\n')
  script('install.d/20-skip.sh', '#!/bin/bash\necho never\n')
  script('install.d/30-noexec', '#!/bin/bash\necho never\n', 0o644)
  script('install.d/40-excluded', '#!/bin/bash\necho never\n')
  script('install.d/50-fails', '#!/bin/bash\nfor i in $(seq 1 50); do echo line$i; done\nexit 3\n')
  script('install.d/60-after', '#!/bin/bash\necho never\n')
  script('environment.d/10-x.bash', 'export ORDER="${ORDER:-}x"\n', 0o644)
  script('environment.d/5-y.bash', 'export ORDER="${ORDER:-}y"\n', 0o644)
  script('block-device.d/10-dev', '#!/bin/bash\necho noise\necho "IMAGE_BLOCK_DEVICE=\'/dev/loop7p1\'"\n')
  script('bad-env/environment.d/10-bad.bash', 'echo "$UNSET_VARIABLE"\n', 0o644)
  script('bad-env/install.d/10-x', '#!/bin/bash\necho x\n')
  script('post-install.d/10-partial', "#!/bin/bash\necho first; printf 'no newline at the end'\n")
  script('post-install.d/20-fails', "#!/bin/bash\nprintf 'partial'; exit 7\n")
  // A background process that keeps the script's output open, and one that does not.
  script(
    'pre-install.d/10-linger',
    `#!/bin/bash\nsleep 1000 &\necho $! > ${dir}/linger.pid\nsleep 1000 >/dev/null 2>&1 &\necho started\n`,
  )
  script('pre-install.d/20-after', '#!/bin/bash\necho after\n')

  const control = (hook: string, extra: Record<string, string> = {}, hooksDir = hooks) => {
    const ctl = join(dir, `${hook}.ctl`)
    writeFileSync(
      ctl,
      formatControlFile({
        hook,
        hooksDir,
        token: 'TOK',
        console: '',
        log: join(dir, 'log'),
        cwd: dir,
        exclude: ['40-excluded'],
        trace: false,
        extraEnv: '',
        vars: [
          { name: 'PROBE', value: `it's $(literal) "q"`, source: 'envvar' },
          ...Object.entries(extra).map(([name, value]) => ({ name, value, source: 'virt-dib' as const })),
        ],
        elementArray: '[a]=/e/a ',
        where: 'host',
      }),
    )
    return ctl
  }
  const run = (hook: string, extra: Record<string, string> = {}, hooksDir = hooks) => {
    const ctl = control(hook, extra, hooksDir)
    const r = spawnSync('bash', [join(dir, 'run-phase'), ctl], { encoding: 'utf8' })
    expect(r.status).toBe(0)
    return r.stdout
  }

  it('runs scripts in sort -n order, stops at the first failure, and reports it with its tail', () => {
    const out = run('install.d')
    const s = parseSummary(out, 'TOK')
    expect(s.scripts).toEqual(['zz', '05-a', '10-b', '50-fails', '60-after'])
    expect(s.ran.map((r) => [r.name, r.status])).toEqual([
      ['zz', 0],
      ['05-a', 0],
      ['10-b', 0],
      ['50-fails', 3],
    ])
    expect(s.done).toBe(3)
    expect(s.tail.length).toBe(40)
    expect(s.tail.at(-1)).toBe('line50')
    expect(s.envFiles).toEqual(['10-x.bash', '5-y.bash'])
  })

  it('streams every output line (stdout and stderr) with the token, values arriving literally', () => {
    const out = run('install.d')
    expect(out).toContain('TOK|L|o|a-out')
    expect(out).toContain('TOK|L|o|a-err')
    expect(out).toContain(`TOK|L|o|b: it's $(literal) "q" xy`)
    expect(out).toContain(`TOK|L|o|${dir}`) // cwd
    expect(out).not.toContain('never')
  })

  it('reports IMAGE_BLOCK_DEVICE= lines of block-device.d, unquoted', () => {
    expect(parseSummary(run('block-device.d'), 'TOK').blockDevice).toBe('/dev/loop7p1')
  })

  it('fails the phase when an environment file fails under set -eu', () => {
    const s = parseSummary(run('install.d', {}, join(hooks, 'bad-env')), 'TOK')
    expect(s.envFail).toMatchObject({ file: '10-bad.bash' })
    expect(s.done).not.toBe(0)
    expect(s.ran).toEqual([])
  })

  it('has an empty list for a phase without a directory', () => {
    const s = parseSummary(run('finalise.d'), 'TOK')
    expect(s).toMatchObject({ scripts: [], ran: [], done: 0 })
  })

  it('keeps a last line without a newline, and the status of the script that printed it', () => {
    const out = run('post-install.d')
    expect(out).toContain('TOK|L|o|first\n')
    expect(out).toContain('TOK|L|o|no newline at the end\n')
    expect(out).toContain('TOK|L|o|partial\n')
    const s = parseSummary(out, 'TOK')
    expect(s.ran.map((r) => [r.name, r.status])).toEqual([
      ['10-partial', 0],
      ['20-fails', 7],
    ])
    expect(s.tail).toEqual(['partial'])
  })

  it('ends a script when it exits, even if a process it left behind keeps its output open', async () => {
    const t0 = Date.now()
    // As the host runner runs: in a process group of its own, stopped when the runner is done.
    const r = await runProcess('bash', [join(dir, 'run-phase'), control('pre-install.d')], { processGroup: true })
    expect(Date.now() - t0).toBeLessThan(20_000)
    const s = parseSummary(r.stdout, 'TOK')
    expect(s.ran.map((x) => [x.name, x.status])).toEqual([
      ['10-linger', 0],
      ['20-after', 0],
    ])
    expect(s.done).toBe(0)
    expect(r.stdout).toContain('TOK|L|o|after')
    expect(r.strays).toHaveLength(2)
    expect(r.strays.map((p) => p.pid)).toContain(Number(readFileSync(join(dir, 'linger.pid'), 'utf8')))
    const pid = Number(readFileSync(join(dir, 'linger.pid'), 'utf8'))
    expect(existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')).toBe(false)
  })

  it('ignores lines without the token (console noise, forged markers)', () => {
    const s = parseSummary('kernel: something\nOTHER|S|done|0\nTOK|S|list|a b\n\rTOK|S|done|0\r', 'TOK')
    expect(s).toMatchObject({ scripts: ['a', 'b'], done: 0 })
  })
})
