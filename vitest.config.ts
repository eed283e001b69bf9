// Two tiers (plus the opt-in slow one): `unit` runs anywhere in seconds (no appliance);
// `appliance` boots real libguestfs appliances (TCG here); package.json runs it with
// --no-file-parallelism so one appliance-heavy file runs at a time.
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    pool: 'forks',
    // Project-level poolOptions are not honoured by vitest 3: execArgv must be set here.
    poolOptions: { forks: { execArgv: ['--expose-gc'] } },
    reporters: ['default'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/native/**/*.test.ts', 'test/cli/**/*.test.ts'],
          pool: 'forks',
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'appliance',
          include: ['test/appliance/**/*.test.ts'],
          pool: 'forks',
          testTimeout: 20 * 60_000,
          hookTimeout: 30 * 60_000,
        },
      },
      {
        test: {
          name: 'slow',
          include: ['test/slow/**/*.test.ts'],
          pool: 'forks',
          testTimeout: 90 * 60_000,
          hookTimeout: 90 * 60_000,
        },
      },
    ],
  },
})
