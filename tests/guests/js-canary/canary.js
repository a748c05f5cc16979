// A JavaScript canary guest (tests/all/js_guests.rs): it reads mailboxes (so data the host
// gave it is in its memory) and then looks for a credential the usual ways a script would:
// the environment and process objects of other runtimes, the network (fetch, XMLHttpRequest,
// WebSocket), dynamic code and every global it can reach. It returns what it found; the test
// scans that, its log and its whole linear memory for the secret and the token. With the
// argument `fetch` it calls fetch(), which the build leaves without a backend: the engine
// traps, so the run fails and nothing leaves the sandbox.
import { grants, invoke, log, plugin, usage } from 'warden-sdk';

function attempt(what, f) {
  log.debug(`trying ${what}`);
  try {
    const value = f();
    return `${what}: ${typeof value === 'string' ? value : JSON.stringify(value) ?? typeof value}`;
  } catch (e) {
    return `${what}: threw ${e && e.name}: ${e && e.message}`;
  }
}

export const run = plugin(([mode]) => {
  if (mode === 'fetch') return String(globalThis.fetch('https://login.microsoftonline.com/'));
  const mailboxes = invoke('Get-Mailbox', { ResultSize: 2 });
  const found = [
    attempt('process.env', () => globalThis.process?.env),
    attempt('Deno.env', () => globalThis.Deno?.env?.toObject()),
    attempt('std env', () => globalThis.std?.getenviron?.()),
    attempt('typeof fetch', () => typeof globalThis.fetch),
    attempt('XMLHttpRequest', () => typeof globalThis.XMLHttpRequest),
    attempt('WebSocket', () => typeof globalThis.WebSocket),
    attempt('require', () => typeof globalThis.require),
    attempt('eval of env', () => globalThis.eval('typeof environment')),
    attempt('globals', () => Object.getOwnPropertyNames(globalThis).sort().join(',')),
    attempt('grants', () => grants()),
    attempt('usage', () => usage()),
  ];
  for (const line of found) log.info(line);
  return { mailboxes, found };
});
