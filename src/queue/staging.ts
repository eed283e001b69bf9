// Where a worker writes, and what it leaves when it dies. A job's outputs are written in a staging
// folder beside their final place (same file system: moved in by rename), and moved in only once
// the build succeeded. Each worker has a work folder of its own (`<workRoot>/<host>.<pid>/`, its
// builds' TMPDIR) holding a ledger of its staging folders; a worker sweeps the work folders of the
// dead workers of its host: their FUSE mounts detached, their staging folders and workspaces removed.
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { lstat, mkdir, readdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

import { VirtDibError } from '../errors.js'
import { findProcessesUsing, killIfSame, readStat, type HostProcess, type ProcStat } from '../host/proc.js'
import { removeWorkspace, type RemoveWorkspaceOptions } from '../host/workspace.js'

/** How a staging folder's name starts (`.virt-dib-part.<host>.<pid>.<jobId>`). */
export const STAGING_PREFIX = '.virt-dib-part.'
const LEDGER = 'ledger.json'

/** A worker's work folder name under the work root. */
export function workDirName(host: string, pid: number): string {
  return `${host}.${pid}`
}

/** The staging folder of a job whose output is `outputPath`: hidden, beside it. */
export function stagingDirFor(outputPath: string, host: string, pid: number, jobId: string): string {
  return join(dirname(outputPath), `${STAGING_PREFIX}${host}.${pid}.${jobId}`)
}

interface LedgerData {
  v: 1
  host: string
  pid: number
  /** The worker's start time (/proc/PID/stat): a later process with the same pid is another worker. */
  startTime: number
  staging: string[]
}

function parseLedger(text: string): LedgerData | undefined {
  try {
    const d = JSON.parse(text) as Partial<LedgerData>
    if (
      d.v !== 1 ||
      typeof d.pid !== 'number' ||
      typeof d.startTime !== 'number' ||
      !Array.isArray(d.staging) ||
      !d.staging.every((s) => typeof s === 'string')
    ) {
      return undefined
    }
    return d as LedgerData
  } catch {
    return undefined
  }
}

async function readLedger(dir: string): Promise<LedgerData | undefined> {
  return readFile(join(dir, LEDGER), 'utf8').then(parseLedger, () => undefined)
}

/** Whether `pid` is running and, with `startTime`, is still the process that had it then. */
export function isAlive(
  pid: number,
  startTime?: number,
  read: (pid: number) => ProcStat | undefined = readStat,
): boolean {
  try {
    process.kill(pid, 0)
  } catch (e) {
    // EPERM: someone else's process, alive.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  if (startTime === undefined) return true
  const st = read(pid)
  return st !== undefined && st.state !== 'Z' && st.startTime === startTime
}

/** This worker's work folder and its ledger of staging folders. */
export class WorkDir {
  #writing: Promise<void> = Promise.resolve()

  private constructor(
    readonly dir: string,
    private readonly data: LedgerData,
  ) {}

  /**
   * Creates `<workRoot>/<host>.<pid>/` with its ledger. A folder already there is a dead
   * process's that had our pid: swept first.
   */
  static async open(workRoot: string, host: string, o: SweepOptions = {}): Promise<WorkDir> {
    const pid = process.pid
    const startTime = readStat(pid)?.startTime ?? 0
    const dir = join(workRoot, workDirName(host, pid))
    await mkdir(workRoot, { recursive: true })
    const old = await lstat(dir).then(
      () => true,
      () => false,
    )
    if (old) await sweepOne(dir, await readLedger(dir), o)
    await mkdir(dir, { recursive: true })
    const w = new WorkDir(dir, { v: 1, host, pid, startTime, staging: [] })
    await w.save()
    return w
  }

  get staging(): readonly string[] {
    return this.data.staging
  }

  /** Records a staging folder before it is made, so a worker killed right after leaves nothing unknown. */
  addStaging(path: string): Promise<void> {
    if (!this.data.staging.includes(path)) this.data.staging.push(path)
    return this.save()
  }

  removeStaging(path: string): Promise<void> {
    this.data.staging = this.data.staging.filter((s) => s !== path)
    return this.save()
  }

  /** Writes the ledger whole (a new file renamed over the old), one write at a time. */
  private save(): Promise<void> {
    const text = JSON.stringify(this.data)
    const write = async () => {
      const tmp = join(this.dir, `.${LEDGER}.${randomBytes(4).toString('hex')}`)
      await writeFile(tmp, text)
      await rename(tmp, join(this.dir, LEDGER))
    }
    const next = this.#writing.then(write, write)
    this.#writing = next.catch(() => undefined)
    return next
  }

  /** Removes the folder (the worker is closing): its staging folders, then the folder itself. */
  async remove(o: RemoveWorkspaceOptions = {}): Promise<void> {
    await this.#writing
    // Our own builds have ended: nothing of ours is to be killed.
    await sweepOne(this.dir, this.data, { ...o, findUsers: () => [] })
  }
}

/**
 * Removes a dead worker's folder: what still runs in it killed (a host script's children outlive
 * the worker's death signal), the staging folders in its ledger, its mounts detached, the folder.
 */
async function sweepOne(dir: string, ledger: LedgerData | undefined, o: SweepOptions): Promise<void> {
  const users = o.findUsers ?? findProcessesUsing
  // /proc shows resolved paths.
  for (const p of users(await realpath(dir).catch(() => dir))) killIfSame(p, 'SIGKILL')
  for (const s of ledger?.staging ?? []) await rm(s, { recursive: true, force: true })
  await removeWorkspace(dir, o)
}

export interface SweepOptions extends RemoveWorkspaceOptions {
  /** This worker's own folder (never swept). */
  self?: string
  /** Tests replace the liveness check… */
  alive?: (pid: number, startTime?: number) => boolean
  /** …and the search for processes still using a folder. */
  findUsers?: (dir: string) => HostProcess[]
}

export interface SweepResult {
  /** Work folders of dead workers that were removed. */
  swept: string[]
  /** What could not be removed, one line each (the next sweep tries again). */
  problems: string[]
}

/**
 * Sweeps the work folders of this host's dead workers under `workRoot`. A folder without a
 * readable ledger counts as dead only once its pid is gone (its worker may be starting). Never throws.
 */
export async function sweepDeadWorkers(workRoot: string, host: string, o: SweepOptions = {}): Promise<SweepResult> {
  const alive = o.alive ?? isAlive
  const result: SweepResult = { swept: [], problems: [] }
  const names = await readdir(workRoot).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(`${host}.`)) continue
    const pidText = name.slice(host.length + 1)
    if (!/^\d+$/.test(pidText)) continue
    const dir = join(workRoot, name)
    if (dir === o.self) continue
    const ledger = await readLedger(dir)
    if (alive(Number(pidText), ledger?.startTime)) continue
    try {
      await sweepOne(dir, ledger, o)
      result.swept.push(dir)
    } catch (e) {
      result.problems.push(`cannot remove ${dir}: ${e instanceof Error ? e.message : String(e)}`)
    }
  }
  return result
}

/**
 * Removes the staging folders that earlier deliveries of job `jobId` left beside its output (a
 * worker lost on another host: nobody sweeps its folder there). Called by the job's holder: a
 * worker that lost the job cannot put its outputs in place anyway. Returns those removed.
 */
export async function removeEarlierStaging(dir: string, jobId: string, keep: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[])
  const earlier = names
    .filter((n) => n.startsWith(STAGING_PREFIX) && n.endsWith(`.${jobId}`))
    .map((n) => join(dir, n))
    .filter((p) => p !== keep)
  for (const p of earlier) await rm(p, { recursive: true, force: true })
  return earlier
}

/** What the engine leaves mid-commit (context.ts, commit.ts): never an output. */
const LEFTOVER = /\.vdib-[0-9a-f]+\.(tmp|old)$/

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  )

/**
 * Moves every entry of `staging` into `dir` by rename, all or nothing: an entry it replaces (a
 * file, or a whole `.d` folder) is first renamed aside and removed once every entry is in; if a
 * move fails, those moved go back and the old ones are restored. Returns the paths moved in.
 */
export async function moveIntoPlace(staging: string, dir: string): Promise<string[]> {
  const entries = (await readdir(staging)).filter((e) => !LEFTOVER.test(e))
  const moved: { from: string; target: string; aside: string | undefined }[] = []
  try {
    for (const e of entries) {
      const from = join(staging, e)
      const target = join(dir, e)
      let aside: string | undefined
      if (await exists(target)) {
        aside = join(dir, `.${e}.vdib-${randomBytes(4).toString('hex')}.old`)
        await rename(target, aside)
      }
      try {
        await rename(from, target)
      } catch (err) {
        if (aside) await rename(aside, target).catch(() => undefined)
        throw err
      }
      moved.push({ from, target, aside })
    }
  } catch (e) {
    for (const m of moved.reverse()) {
      await rename(m.target, m.from).catch(() => rm(m.target, { recursive: true, force: true }))
      if (m.aside) await rename(m.aside, m.target).catch(() => undefined)
    }
    throw new VirtDibError(`cannot put the outputs in place in ${dir}: ${e instanceof Error ? e.message : String(e)}`, {
      cause: e,
    })
  }
  for (const m of moved) if (m.aside) await rm(m.aside, { recursive: true, force: true }).catch(() => undefined)
  return moved.map((m) => m.target)
}

/** sha256 hex of a file, streamed: the event loop stays free (the worker's locks are renewed meanwhile). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
