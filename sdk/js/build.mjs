#!/usr/bin/env node
// Builds a JavaScript warden plugin into a component:
//   node sdk/js/build.mjs src/plugin.js --manifest manifest.json -o plugin.wasm
// 1. bundles the plugin with its relative imports and `warden-sdk` (this directory) into one
//    ES module (rolldown), leaving the `warden:plugin/*` imports to the component;
// 2. componentizes it against wit/ (world `plugin`) with componentize-js, the WASI features
//    warden refuses turned off: `http` (wasi:http/outgoing-handler) and `fetch-event`
//    (wasi:http/types). What stays (stdio, clocks, random) is what warden links;
// 3. writes the manifest (JSON: name, version, description, cmdlets, reads) as the
//    `warden:manifest` custom section: with `warden plugin embed-manifest` when the warden
//    binary (--warden PATH, else $WARDEN_BIN, else `warden` on PATH) has that command, else
//    itself in the same TOML the Rust SDK's `manifest!` writes.

import { componentize } from '@bytecodealliance/componentize-js';
import { rolldown } from 'rolldown';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const WIT = resolve(here, '../../wit');
/** Features warden has no interface for; each flag removes the import named beside it. */
export const DISABLED_FEATURES = ['http', 'fetch-event'];

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(2);
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    manifest: { type: 'string', short: 'm' },
    out: { type: 'string', short: 'o' },
    warden: { type: 'string' },
  },
});
if (positionals.length !== 1 || !values.out || !values.manifest) {
  fail('usage: node build.mjs ENTRY.js --manifest manifest.json -o OUT.wasm [--warden PATH]');
}
const entry = resolve(positionals[0]);
const out = resolve(values.out);
const manifestPath = resolve(values.manifest);

const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
const toml = manifestToml(manifest, manifestPath);

const work = await mkdtemp(join(tmpdir(), 'warden-js-'));
try {
  const bundle = await rolldown({
    input: entry,
    external: [/^warden:/],
    resolve: { alias: { 'warden-sdk': join(here, 'index.js') } },
    logLevel: 'warn',
  });
  const bundled = join(work, 'plugin.js');
  await bundle.write({ file: bundled, format: 'esm' });
  await bundle.close();

  const { component } = await componentize({
    sourcePath: bundled,
    witPath: WIT,
    worldName: 'plugin',
    disableFeatures: DISABLED_FEATURES,
  });
  const warden = values.warden ?? process.env.WARDEN_BIN ?? 'warden';
  if (hasEmbedCommand(warden)) {
    await writeFile(out, component);
    const run = spawnSync(warden, ['plugin', 'embed-manifest', out, '--manifest', manifestPath], { stdio: 'inherit' });
    if (run.status !== 0) fail(`${warden} plugin embed-manifest failed`);
  } else {
    await writeFile(out, withCustomSection(component, 'warden:manifest', Buffer.from(toml, 'utf8')));
  }
  console.error(`build.mjs: wrote ${out}`);
} finally {
  await rm(work, { recursive: true, force: true });
}

function hasEmbedCommand(warden) {
  const probe = spawnSync(warden, ['plugin', 'embed-manifest', '--help'], { stdio: 'ignore' });
  return probe.status === 0;
}

/** The manifest as the TOML the host reads; JSON string escapes are valid TOML basic strings. */
function manifestToml(m, where) {
  const str = (v, key) => {
    if (typeof v !== 'string') fail(`${where}: \`${key}\` must be a string`);
    return JSON.stringify(v);
  };
  const table = (value, key) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      fail(`${where}: \`${key}\` must be an object of cmdlet name to a list of names`);
    }
    return Object.entries(value)
      .map(([cmdlet, names]) => {
        if (!Array.isArray(names)) fail(`${where}: \`${key}.${cmdlet}\` must be a list of names`);
        return `${str(cmdlet, key)} = [${names.map((n) => str(n, `${key}.${cmdlet}`)).join(', ')}]\n`;
      })
      .join('');
  };
  let text = `name = ${str(m.name, 'name')}\n`;
  if (m.version !== undefined) text += `version = ${str(m.version, 'version')}\n`;
  if (m.description !== undefined) text += `description = ${str(m.description, 'description')}\n`;
  if (m.cmdlets === undefined) fail(`${where}: declare the cmdlets the plugin calls in \`cmdlets\``);
  text += `\n[cmdlets]\n${table(m.cmdlets, 'cmdlets')}`;
  if (m.reads !== undefined) text += `\n[reads]\n${table(m.reads, 'reads')}`;
  return text;
}

/** Appends a custom section (id 0: name, then bytes) at the component's top level. */
function withCustomSection(wasm, name, data) {
  const leb = (n) => {
    const bytes = [];
    do {
      let byte = n & 0x7f;
      n >>>= 7;
      if (n) byte |= 0x80;
      bytes.push(byte);
    } while (n);
    return Buffer.from(bytes);
  };
  const nameBytes = Buffer.from(name, 'utf8');
  const body = Buffer.concat([leb(nameBytes.length), nameBytes, data]);
  return Buffer.concat([Buffer.from(wasm), Buffer.from([0]), leb(body.length), body]);
}
