// Prepares, on the host, everything virt-dib brings into the image: the merged hooks tree,
// diskimage-builder's lib, the runner and one control file per phase, fake sudo/awk, and the
// out directory. It goes into the appliance as one disk image (src/host/aux-image.ts).
import { chmodSync, cpSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { planValues } from '../blockdev/devices.js'
import { DIB_BLOCK_DEVICE_SCRIPT, getvalFiles, paramsYaml } from '../blockdev/getval.js'
import { phaseEnvironment, type EnvInputs, type EnvVar } from '../elements/environment.js'
import { shellQuote } from '../util/shell-quote.js'
import { prepareHooksTree } from '../elements/hooks.js'
import * as L from '../elements/layout.js'
import { AUX_TREE as T, type AuxPath } from '../elements/layout.js'
import { VirtDibError } from '../errors.js'
import { extraPackages, extraPackagesScript, runsExtraPackages } from '../phases/extra-packages.js'
import { PHASES } from '../phases/registry.js'
import { formatControlFile, type ControlOptions } from '../phases/runner/control-file.js'
import { FAKE_AWK, FAKE_SUDO, RUNNER_SCRIPT } from '../phases/runner/runner-script.js'
import type { Phase } from '../phases/types.js'
import type { BuildContext } from './context.js'

/** Where the appliance's runners send live lines. */
const SERIAL_CONSOLE = '/dev/ttyS0'

function writeExecutable(path: string, content: string): void {
  writeFileSync(path, content)
  chmodSync(path, 0o755)
}

/**
 * What get_image_element_array prints: `[name]='dir' …`, which elements `eval` into an array
 * (as the original, the directory is quoted: element paths may hold blanks or `$`; names are
 * plain, planBuild checks them).
 */
export function elementArray(ctx: Pick<BuildContext, 'plan'>): string {
  return ctx.plan.resolution.elements.map((e) => `[${e.name}]=${shellQuote(e.dir)}`).join(' ') + ' '
}

/**
 * The control file of `phase`: paths as a runner at its `where` sees them (on the host, through
 * the FUSE view at `hostMount`). The token and the log come as the runner's arguments.
 */
function controlFor(
  ctx: BuildContext,
  phase: Phase,
  vars: readonly EnvVar[],
  at: 'guest' | { hostMount: string },
): ControlOptions {
  const where = phase.where
  const view = (rel: AuxPath) => L.seenFrom(where, L.guest(rel), at === 'guest' ? '' : at.hostMount)
  const cwd = { '/': '/', out: view(L.outDirPath(ctx.plan.imageName)), caller: process.cwd() }[phase.cwd]
  return {
    hook: phase.hook,
    hooksDir: view(T.hooks),
    // The host runner's live lines are its stdout.
    console: at === 'guest' ? SERIAL_CONSOLE : '',
    cwd,
    exclude: ctx.plan.excludeScripts,
    trace: ctx.plan.debug > 0,
    extraEnv: phase.afterBlockDevice ? view(T.blockDeviceEnv) : '',
    vars,
    elementArray: elementArray(ctx),
    where,
    ...(phase.scriptsDir !== undefined ? { scriptsDir: view(phase.scriptsDir) } : {}),
  }
}

/**
 * The environment file diskimage-builder writes before extra-data.d (so root.d does not see it);
 * it replaces an element's file of the same name.
 */
export function installTypeFile(ctx: BuildContext): { path: string; content: string } {
  const type = shellQuote(ctx.plan.installType)
  return {
    path: `${L.guest(T.environmentD)}/11-dib-install-type.bash`,
    content: `export DIB_DEFAULT_INSTALLTYPE=\${DIB_DEFAULT_INSTALLTYPE:-${type}}\n`,
  }
}

/**
 * compat: the original creates the host image cache (mkdir -p, 0755) while it prepares the aux
 * data, before launch; it is a cache, so it stays. --dry-run prepares nothing and creates nothing.
 */
export function prepareImageCache(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 })
  } catch (e) {
    throw new VirtDibError(
      `cannot create the image cache ‘${dir}’: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      {
        cause: e,
        hint: 'choose another directory with --image-cache',
      },
    )
  }
}

/** Writes the aux tree into the workspace; returns its directory. */
export function prepareAuxTree(ctx: BuildContext): string {
  const { plan } = ctx
  prepareImageCache(plan.envInputs.imageCache)
  const aux = join(ctx.workspace, L.WORKSPACE.aux)
  const at = (rel: AuxPath) => L.onHost(aux, rel)
  prepareHooksTree(plan.hooks, at(T.hooks))
  mkdirSync(at(T.environmentD), { recursive: true })
  cpSync(plan.libPath, at(T.lib), { recursive: true, dereference: true })
  mkdirSync(at(T.fakeBin), { recursive: true })
  writeExecutable(join(at(T.fakeBin), 'sudo'), FAKE_SUDO)
  writeExecutable(join(at(T.fakeBin), 'awk'), FAKE_AWK)
  writeExecutable(join(at(T.fakeBin), 'dib-block-device'), DIB_BLOCK_DEVICE_SCRIPT)
  writeBlockDeviceState(ctx, at)
  const runParts = join(plan.libPath, 'dib-run-parts')
  if (existsSync(runParts)) {
    cpSync(runParts, join(at(T.fakeBin), 'dib-run-parts'), { dereference: true })
    cpSync(runParts, at(T.hooksRunParts), { dereference: true })
  }
  mkdirSync(at(L.outDirPath(plan.imageName)), { recursive: true })
  if (!plan.appliance.drive) mkdirSync(at(T.perm), { recursive: true })

  mkdirSync(at(T.runners), { recursive: true })
  writeExecutable(at(T.runner), RUNNER_SCRIPT)
  const warnings = new Set<string>()
  for (const phase of [...PHASES, extraPackages]) {
    if (phase.where === 'host') continue
    const env = phaseEnvironment(plan.envInputs, phase)
    writeFileSync(at(L.controlFilePath(phase.hook)), formatControlFile(controlFor(ctx, phase, env.vars, 'guest')))
    for (const w of env.warnings) warnings.add(w)
  }
  for (const w of warnings) ctx.emit({ kind: 'warning', text: w })
  if (runsExtraPackages(plan.extraPackages) && extraPackages.scriptsDir !== undefined) {
    const script = extraPackagesScript(plan.extraPackages)
    mkdirSync(at(extraPackages.scriptsDir), { recursive: true })
    writeExecutable(join(at(extraPackages.scriptsDir), script.name), script.content)
  }
  // The host side of extra-data.d.
  writeExecutable(join(ctx.workspace, L.WORKSPACE.runner), RUNNER_SCRIPT)
  const hostBin = join(ctx.workspace, L.WORKSPACE.fakeBin)
  mkdirSync(hostBin, { recursive: true })
  writeExecutable(join(hostBin, 'sudo'), FAKE_SUDO)
  return aux
}

/** The layout's config, params.yaml and the getval answers known before the build. */
function writeBlockDeviceState(ctx: BuildContext, host: (rel: AuxPath) => string): void {
  const { plan } = ctx
  const dir = host(T.blockdev)
  mkdirSync(join(dir, 'plan'), { recursive: true })
  mkdirSync(join(dir, 'created'), { recursive: true })
  for (const [p, c] of getvalFiles(planValues(plan.layout), 'plan')) writeFileSync(join(dir, p), c)
  writeFileSync(host(T.blockdevConfig), plan.layoutSource.yaml)
  // dib-block-device runs in the appliance, outside the chroot.
  const at = (rel: AuxPath) => L.inAppliance(L.guest(rel))
  writeFileSync(
    host(T.blockdevParams),
    paramsYaml(plan.layout, {
      configPath: at(T.blockdevConfig),
      imageDir: at(''),
      buildDir: at(''),
      mountBase: L.SYSROOT,
      fsType: plan.fsType,
      rootLabel: plan.mkfs.rootLabel,
      mkfsOptions: plan.mkfs.options,
    }),
  )
}

/** The control file and environment of extra-data.d, for a FUSE mount at `mountpoint`. */
export function prepareHostPhase(ctx: BuildContext, phase: Phase, mountpoint: string): NodeJS.ProcessEnv {
  const inputs: EnvInputs = {
    ...ctx.plan.envInputs,
    hostMount: mountpoint,
    hostFakeBin: join(ctx.workspace, L.WORKSPACE.fakeBin),
  }
  const { vars } = phaseEnvironment(inputs, phase)
  writeFileSync(ctx.controlFile(phase), formatControlFile(controlFor(ctx, phase, vars, { hostMount: mountpoint })))
  const env: NodeJS.ProcessEnv = { ...ctx.plan.env }
  for (const v of vars) env[v.name] = v.value
  return env
}
