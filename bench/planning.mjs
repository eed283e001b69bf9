// Planning cost vs one appliance launch, measured in the same run: the largest request that
// resolves from Debian's shipped elements (greedily grown), planned many times (dry run:
// discovery, resolution, hooks merge, script lists, environment of every phase).
import { performance } from 'node:perf_hooks'
import { readdirSync } from 'node:fs'

import { describePlan, planBuild } from '../dist/api/index.js'
import { Guestfs } from '../dist/guestfs/index.js'
import { chooseBackendSettings } from '../dist/host/kvm.js'

const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
const ELEMENTS = '/usr/lib/python3/dist-packages/diskimage_builder/elements'
const opts = (elements) => ({
  elements,
  libPath: LIB,
  elementPaths: [ELEMENTS],
  name: '/tmp/vdib-bench-plan',
  formats: ['qcow2'],
})
const tryPlan = (elements) => {
  try {
    return describePlan(planBuild(opts(elements)))
  } catch {
    return undefined
  }
}

let request = ['debian-minimal', 'vm']
for (const e of readdirSync(ELEMENTS).sort()) {
  if (request.includes(e)) continue
  if (tryPlan([...request, e])) request = [...request, e]
}
const report = tryPlan(request)
const runs = 20
const times = []
for (let i = 0; i < runs; i++) {
  const t = performance.now()
  describePlan(planBuild(opts(request)))
  times.push(performance.now() - t)
}
times.sort((a, b) => a - b)
const planMs = times[Math.floor(runs / 2)]

const backendSettings = chooseBackendSettings()
const g = await Guestfs.create(backendSettings ? { backendSettings } : {})
await g.addDrive('/dev/null')
const t = performance.now()
await g.launch()
const launchMs = performance.now() - t
await g.close()

console.log(`## Planning vs launch (${new Date().toISOString()})\n`)
console.log(
  `- request: ${request.length} elements requested, ${report.elements.length} after expansion, ` +
    `${report.phases.reduce((n, p) => n + p.scripts.length, 0)} scripts`,
)
console.log(
  `- planning (median of ${runs}): ${planMs.toFixed(1)} ms (min ${times[0].toFixed(1)}, max ${times.at(-1).toFixed(1)})`,
)
console.log(`- one appliance launch: ${(launchMs / 1000).toFixed(1)} s`)
console.log(`- planning / launch: ${((planMs / launchMs) * 100).toFixed(3)} % (target < 1 %)`)
