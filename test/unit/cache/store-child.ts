// A second process for the store's concurrency tests (bundled by the test with esbuild, run by
// node): `build DIR KEY MS` builds KEY (or waits for whoever does, then hits), `hang DIR KEY`
// starts writing KEY and never ends, `use DIR KEY…` marks entries in use and never ends. It says
// what it does on stdout, one word a line.
import { writeFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'

import { openStore } from '../../../src/cache/store.js'

const [cmd, dir, ...rest] = process.argv.slice(2)
const say = (word: string) => process.stdout.write(`${word}\n`)
const store = await openStore(dir!, { warn: (t) => process.stderr.write(`warn: ${t}\n`) })

if (cmd === 'build') {
  const [key, ms] = rest as [string, string]
  for (;;) {
    const got = await store.begin(key)
    if ('commit' in got) {
      say('build')
      await writeFile(got.path('data'), `built by ${process.pid}\n`)
      await sleep(Number(ms))
      const r = await got.commit({ step: 'install.d', parent: null, elements: ['e'], inputs: { a: '1' }, seconds: 1 })
      say(r.stored ? 'stored' : 'lost')
      break
    }
    say('wait')
    await got.wait(undefined, 50)
    if (await store.lookup(key)) {
      say('hit')
      break
    }
  }
} else if (cmd === 'hang') {
  const got = await store.begin(rest[0]!)
  if (!('commit' in got)) throw new Error('busy')
  await writeFile(got.path('data'), 'half')
  say('writing')
  await sleep(1e9)
} else if (cmd === 'use') {
  await store.use(rest)
  say('using')
  await sleep(1e9)
}
