// A private Docker daemon for tests: its own data root, exec root, pid file and unix socket in a
// fresh directory, no iptables and no bridge (containers run with --network none). It never uses
// or touches the system's docker service. Needs root and Debian's docker.io (dockerd).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'

import { findExecutable } from '../../src/host/which.js'
import { alive, waitFor } from './processes.js'

export type DockerdSupport = { ok: true } | { ok: false; reason: string }

/** Whether a private dockerd can run here, and if not why (shown in the skipped test's name). */
export function dockerdSupport(): DockerdSupport {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'a private dockerd needs root' }
  if (!findExecutable('dockerd')) return { ok: false, reason: 'dockerd is not installed (apt-get install docker.io)' }
  if (!findExecutable('docker', '/usr/bin:/bin'))
    return { ok: false, reason: 'the docker.io client /usr/bin/docker is missing' }
  return { ok: true }
}

export interface PrivateDockerd {
  /** DOCKER_HOST for clients: unix://…/docker.sock */
  host: string
  /** A directory to put first on PATH: its `docker` is the client that matches this daemon. */
  bin: string
  /** Runs the client against this daemon; returns stdout. */
  docker(args: string[]): string
  /** Stops the daemon (and its containerd), unmounts what it left, removes its directory. */
  stop(): Promise<void>
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .map((m) => m.replace(/\\040/g, ' '))
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length)
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // already gone
  }
}

/** Processes whose command line mentions `dir` (the daemon's containerd and shims). */
function processesUsing(dir: string): number[] {
  const pids: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(dir)) pids.push(Number(d))
    } catch {
      // gone
    }
  }
  return pids.filter((p) => p !== process.pid)
}

/** Starts a private dockerd and waits until it answers (up to `timeoutMs`). */
export async function startPrivateDockerd(timeoutMs = 60_000): Promise<PrivateDockerd> {
  // Short: the socket paths below it must stay under the 108-byte limit of unix sockets.
  const dir = mkdtempSync('/tmp/vdkd.')
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  // The docker.io client matches the daemon's API (a newer client elsewhere on PATH may not).
  symlinkSync('/usr/bin/docker', join(bin, 'docker'))
  const sock = join(dir, 'docker.sock')
  const host = `unix://${sock}`
  // A bash watchdog runs dockerd: if this test process dies (a timeout, a crash) before stop(),
  // it stops dockerd and removes the directory, so that no daemon outlives the test.
  const watchdog = `
    parent=$1 dir=$2; shift 2
    dockerd "$@" > "$dir/dockerd.log" 2>&1 &
    d=$!
    trap 'kill -TERM "$d"; wait "$d"; exit 0' TERM
    while kill -0 "$d" 2>/dev/null; do
      if ! kill -0 "$parent" 2>/dev/null; then kill -TERM "$d"; wait "$d"; rm -rf "$dir"; exit 0; fi
      sleep 1
    done
    wait "$d"`
  // prettier-ignore
  const daemon: ChildProcess = spawn('bash', ['-c', watchdog, 'vdib-dockerd', String(process.pid), dir,
    '--data-root', join(dir, 'data'),
    '--exec-root', join(dir, 'exec'),
    '--pidfile', join(dir, 'dockerd.pid'),
    '-H', host,
    '--iptables=false',
    '--ip6tables=false',
    '--bridge=none',
    '--userland-proxy=false',
  ], { stdio: 'ignore' })
  const log = () => {
    try {
      return readFileSync(join(dir, 'dockerd.log'), 'utf8').trim().split('\n').slice(-3).join(' | ')
    } catch {
      return '(no log)'
    }
  }
  let exited = false
  daemon.on('exit', () => (exited = true))
  const docker = (args: string[]) =>
    execFileSync('/usr/bin/docker', args, {
      encoding: 'utf8',
      env: { ...process.env, DOCKER_HOST: host },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
  const stop = async () => {
    if (!exited) {
      daemon.kill('SIGTERM') // the watchdog's trap stops dockerd and waits for it
      if (!(await waitFor(() => exited, 30_000))) {
        for (const p of processesUsing(dir)) kill(p)
        daemon.kill('SIGKILL')
      }
    }
    // containerd and shims it started exit with it; make sure, then leave no mount behind.
    await waitFor(() => processesUsing(dir).every((p) => !alive(p)), 10_000)
    for (const p of processesUsing(dir)) kill(p)
    for (const m of mountsUnder(dir)) execFileSync('umount', ['-l', m])
    rmSync(dir, { recursive: true, force: true })
  }
  const up = await waitFor(
    () => {
      if (exited) return true
      try {
        docker(['version', '--format', '{{.Server.Version}}'])
        return true
      } catch {
        return false
      }
    },
    timeoutMs,
    250,
  )
  if (!up || exited) {
    await stop()
    throw new Error(`the private dockerd did not start: ${log()}`)
  }
  return { host, bin, docker, stop }
}
