// @azure/msal-node as an independent Entra ID client: acquire an app-only token from an
// authority (exosim, or anything else) and print ONE JSON line with the outcome.
//
// usage: node msal_node_peer.mjs --authority https://localhost:PORT/TENANT --client-id ID
//            --credential secret|cert [--key-pem FILE --cert-pem FILE] [--ca-file FILE]
//
// The secret comes from PEER_CLIENT_SECRET (never argv). The certificate form is
// clientCertificate {thumbprintSha256, privateKey, x5c}: PS256 with an unpadded x5t#S256 and x5c.
// Node reads NODE_EXTRA_CA_CERTS only at start-up, so with --ca-file and no matching variable
// the script re-runs itself with it set. knownAuthorities skips cloud instance discovery. The
// whole run is bounded by --timeout seconds. Output: {"ok": true, "token_type", "expires_in",
// "claims"} or {"ok": false, "error", "error_description", "error_codes"} (or "exception").
// The access token itself is not printed.

import { spawnSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

function parseArgs(argv) {
  const args = { scope: "https://outlook.office365.com/.default", timeout: "30" };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  args.authority ??= process.env.PEER_AUTHORITY;
  args["client-id"] ??= process.env.PEER_CLIENT_ID;
  for (const required of ["authority", "client-id", "credential"]) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  return args;
}

function emit(result, code) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

const args = parseArgs(process.argv.slice(2));
const timeoutMs = Number(args.timeout) * 1000;

if (args["ca-file"] && process.env.NODE_EXTRA_CA_CERTS !== args["ca-file"]) {
  const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: args["ca-file"] },
    stdio: "inherit",
    timeout: timeoutMs + 2000,
  });
  process.exit(child.status ?? 3);
}

// A hard stop, whatever msal or the network does.
const timer = setTimeout(() => emit({ ok: false, exception: `timed out after ${args.timeout} s` }, 3), timeoutMs);

const { ConfidentialClientApplication } = await import("@azure/msal-node");

const auth = {
  clientId: args["client-id"],
  authority: args.authority,
  knownAuthorities: [new URL(args.authority).host],
};
if (args.credential === "secret") {
  auth.clientSecret = process.env.PEER_CLIENT_SECRET;
} else if (args.credential === "cert") {
  const certPem = readFileSync(args["cert-pem"], "utf8");
  const der = new X509Certificate(certPem).raw;
  auth.clientCertificate = {
    thumbprintSha256: createHash("sha256").update(der).digest("hex"),
    privateKey: readFileSync(args["key-pem"], "utf8"),
    x5c: certPem,
  };
} else {
  throw new Error(`unknown --credential ${args.credential}`);
}

try {
  const app = new ConfidentialClientApplication({ auth });
  const result = await app.acquireTokenByClientCredential({ scopes: [args.scope] });
  clearTimeout(timer);
  const payload = result.accessToken.split(".")[1];
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
  emit({ ok: true, token_type: result.tokenType, expires_on: result.expiresOn, claims }, 0);
} catch (e) {
  clearTimeout(timer);
  emit(
    {
      ok: false,
      error: e.errorCode ?? null,
      error_description: e.errorMessage ?? String(e),
      error_codes: e.errorNo ? [Number(e.errorNo)] : [],
      name: e.name ?? null,
    },
    1,
  );
}
