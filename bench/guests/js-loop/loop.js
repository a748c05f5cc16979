// The benchmark's JavaScript guest: `Get-Mailbox -ResultSize 1` N times (--count N, default
// 1000), then {"calls": N}. The Rust and Python loop guests do the same.
// Build: node sdk/js/build.mjs bench/guests/js-loop/loop.js \
//          --manifest bench/guests/js-loop/manifest.json -o js-loop.wasm
import { Args, PluginError, invoke, plugin } from 'warden-sdk';

export const run = plugin((words) => {
  const args = new Args(words);
  const count = args.integer('count') ?? 1000;
  args.finish();
  for (let i = 0; i < count; i += 1) {
    if (invoke('Get-Mailbox', { ResultSize: 1 }).length !== 1) {
      throw new PluginError(`call ${i + 1} did not return one mailbox`);
    }
  }
  return { calls: count };
});
