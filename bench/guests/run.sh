#!/usr/bin/env bash
# The guest-language benchmark: the same loop (`Get-Mailbox -ResultSize 1`, --count N times,
# output {"calls": N}) written in Rust, Python and JavaScript, run through `warden run` against
# exosim. For each language, interleaved: the component's size; (a) the first run with an empty
# compiled-code cache (compile + run, --count 1); (b) per-run start, the median of --start-runs
# runs of --count 1 with the cache warm; (c) peak RSS of those runs and of the loop; (d) the
# 1,000-call loop, median of --loop-runs, and its calls/s.
#
#   cargo build --release -p warden --features demo -p exosim   # what a user runs
#   bash bench/guests/run.sh                                    # writes bench/results/guests.{md,json}
#   bash bench/guests/run.sh --warden PATH             # another warden binary
#
# Options: --warden PATH (default target/release/warden), --exosim PATH (default the exosim
# beside warden, else target/release/exosim), --start-runs N (20), --loop-runs N (3),
# --calls N (1000), --cold-runs N (1), --langs rust,python,js (a subset, e.g. when a warden
# build predates one language's support). Needs /usr/bin/time, python3, the wasm32-wasip2 Rust
# target and the guest toolchains (`bash tests/peers/setup.sh`). Nothing fails on a number.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
warden="$target/release/warden"
exosim=""
start_runs=20
loop_runs=3
calls=1000
cold_runs=1
langs=(rust python js)
while [ $# -gt 0 ]; do
    case "$1" in
        --warden) warden="$2"; shift ;;
        --exosim) exosim="$2"; shift ;;
        --start-runs) start_runs="$2"; shift ;;
        --loop-runs) loop_runs="$2"; shift ;;
        --calls) calls="$2"; shift ;;
        --cold-runs) cold_runs="$2"; shift ;;
        --langs) IFS=, read -r -a langs <<< "$2"; shift ;;
        *) echo "guests/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
warden="$(realpath "$warden")"
if [ -z "$exosim" ]; then
    exosim="$(dirname "$warden")/exosim"
    [ -x "$exosim" ] || exosim="$target/release/exosim"
fi
for tool in "$warden" "$exosim" /usr/bin/time; do
    [ -x "$tool" ] || { echo "guests/run.sh: $tool is missing (build it, or give --warden/--exosim)" >&2; exit 1; }
done
[ -x sdk/python/.venv/bin/python ] && [ -d sdk/js/node_modules ] || {
    echo "guests/run.sh: the guest toolchains are missing; run: bash tests/peers/setup.sh" >&2; exit 1; }

results="$root/bench/results"
mkdir -p "$results"
work="$(mktemp -d)"
exosim_pid=""
cleanup() {
    [ -n "$exosim_pid" ] && kill "$exosim_pid" 2>/dev/null && wait "$exosim_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "guests/run.sh: building the three loop guests" >&2
wants() { [[ " ${langs[*]} " == *" $1 "* ]]; }
if wants rust; then
cargo build --release --quiet --target wasm32-wasip2 --target-dir "$target" \
    --manifest-path bench/guests/rust-loop/Cargo.toml
cp "$target/wasm32-wasip2/release/rust_loop.wasm" "$work/rust.wasm"
fi
if wants python; then
# build.py writes the manifest with `warden plugin embed-manifest`; a warden built before that
# command existed gets a stand-in that appends the same `warden:manifest` section, as
# sdk/js/build.mjs does in that case.
embedder="$warden"
if ! "$warden" plugin embed-manifest --help >/dev/null 2>&1; then
    embedder="$work/embed-manifest"
    cat > "$embedder" <<'SH'
#!/usr/bin/env python3
# Stand-in for `warden plugin embed-manifest P.wasm --manifest M.json` (and nothing else).
import json, sys
assert sys.argv[1:3] == ["plugin", "embed-manifest"] and sys.argv[4] == "--manifest", sys.argv
plugin, m = sys.argv[3], json.load(open(sys.argv[5]))
s = json.dumps
toml = f"name = {s(m['name'])}\nversion = {s(m['version'])}\ndescription = {s(m['description'])}\n\n[cmdlets]\n"
toml += "".join(f"{s(c)} = [{', '.join(map(s, ps))}]\n" for c, ps in m["cmdlets"].items())
def leb(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
name, data = b"warden:manifest", toml.encode()
body = leb(len(name)) + name + data
open(plugin, "ab").write(b"\x00" + leb(len(body)) + body)
SH
    chmod +x "$embedder"
fi
sdk/python/.venv/bin/python sdk/python/build.py bench/guests/python-loop --warden "$embedder" \
    -o "$work/python.wasm" >&2
fi
if wants js; then
node sdk/js/build.mjs bench/guests/js-loop/loop.js --manifest bench/guests/js-loop/manifest.json \
    -o "$work/js.wasm" >&2
fi

# One policy shape for all three (python-loop's), each pinned to its own build.
declare -A plugin_name=([rust]=rust-loop [python]=python-loop [js]=js-loop)
for lang in "${langs[@]}"; do
    mkdir -p "$work/$lang"
    sed "s/python-loop/${plugin_name[$lang]}/g" bench/guests/python-loop/policy.toml > "$work/$lang/policy.toml"
    "$warden" policy pin "$work/$lang/policy.toml" "$work/$lang.wasm" >/dev/null
done

echo "guests/run.sh: starting exosim" >&2
"$exosim" serve --bind 127.0.0.1:0 --ready-file "$work/ready.json" --state-dir "$work/exosim" \
    > "$work/exosim.log" 2>&1 &
exosim_pid=$!
for _ in $(seq 600); do [ -s "$work/ready.json" ] && break; sleep 0.5; done
[ -s "$work/ready.json" ] || { echo "guests/run.sh: exosim was not ready" >&2; cat "$work/exosim.log" >&2; exit 1; }
eval "$(python3 - "$work/ready.json" <<'PY'
import json, shlex, sys
r = json.load(open(sys.argv[1]))
t = r["tenants"][0]; app = t["apps"][0]
for k, v in {"AZURE_TENANT_ID": t["tenant_id"], "AZURE_CLIENT_ID": app["client_id"],
             "AZURE_CLIENT_SECRET": app["client_secret"], "AZURE_AUTHORITY_HOST": r["url"],
             "WARDEN_CA_FILE": r["ca_file"], "WARDEN_EXCHANGE_URL": r["exchange_url"]}.items():
    print(f"export {k}={shlex.quote(v)}")
PY
)"
export HOME="$work"

# run LANG CACHE_DIR COUNT KIND: one `warden run`; appends "LANG KIND ms rss_kib" to raw.txt.
run() {
    local lang="$1" cache="$2" count="$3" kind="$4" started ended out
    started="$(date +%s%N)"
    out="$(/usr/bin/time -f %M -o "$work/rss" "$warden" run "$work/$lang.wasm" \
        --policy "$work/$lang/policy.toml" --audit "$work/$lang/audit.jsonl" \
        --audit-key "$work/$lang/audit.key" --cache-dir "$cache" --output json --quiet \
        -- --count "$count" 2>"$work/stderr")" || {
        echo "guests/run.sh: $lang run failed: $out" >&2; cat "$work/stderr" >&2; exit 1; }
    ended="$(date +%s%N)"
    python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1]) != {"calls": int(sys.argv[2])})' \
        "$out" "$count" || { echo "guests/run.sh: $lang printed $out, not {\"calls\": $count}" >&2; exit 1; }
    echo "$lang $kind $(( (ended - started) / 1000 )) $(tail -1 "$work/rss")" >> "$work/raw.txt"
}

# Rotates the order of the languages each repetition, so drift in the machine's load spreads
# over all three.
order() { local k=$(($1 % ${#langs[@]})); echo "${langs[@]:k} ${langs[@]:0:k}"; }

echo "guests/run.sh: (a) first runs, empty compiled-code cache" >&2
for i in $(seq 0 $((cold_runs - 1))); do
    for lang in $(order "$i"); do run "$lang" "$work/$lang/cold-$i" 1 cold; done
done
echo "guests/run.sh: (b) per-run start, warm cache, $start_runs runs each" >&2
for lang in "${langs[@]}"; do run "$lang" "$work/$lang/cache" 1 warmup; done
for i in $(seq 0 $((start_runs - 1))); do
    for lang in $(order "$i"); do run "$lang" "$work/$lang/cache" 1 start; done
done
echo "guests/run.sh: (d) the $calls-call loop, $loop_runs runs each" >&2
for i in $(seq 0 $((loop_runs - 1))); do
    for lang in $(order "$i"); do run "$lang" "$work/$lang/cache" "$calls" loop; done
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

for lang in "${langs[@]}"; do echo "$lang $(stat -c %s "$work/$lang.wasm")"; done > "$work/sizes.txt"
python3 - "$work/raw.txt" "$work/sizes.txt" "$results/guests.md" "$results/guests.json" \
    "$calls" "$load_start" "$load_end" "$warden" <<'PY'
import json, statistics, sys
raw, sizes, md_path, json_path, calls, load_start, load_end, warden = sys.argv[1:]
calls = int(calls)
runs = {}
for line in open(raw):
    lang, kind, us, rss = line.split()
    runs.setdefault((lang, kind), []).append((int(us) / 1000, int(rss)))
size = {l: int(s) for l, s in (line.split() for line in open(sizes))}
names = {"rust": "Rust", "python": "Python", "js": "JavaScript"}
names = {l: n for l, n in names.items() if l in size}
out = {"calls": calls, "warden": warden, "load_start": load_start, "load_end": load_end,
       "languages": {}}
for lang in names:
    ms = lambda kind: [m for m, _ in runs[(lang, kind)]]
    rss = lambda kind: [r for _, r in runs[(lang, kind)]]
    loop = statistics.median(ms("loop"))
    out["languages"][lang] = {
        "component_bytes": size[lang],
        "first_run_ms": statistics.median(ms("cold")), "first_run_ms_all": ms("cold"),
        "start_ms_median": statistics.median(ms("start")),
        "start_ms_min": min(ms("start")), "start_ms_max": max(ms("start")),
        "start_runs": len(ms("start")),
        "start_peak_rss_kib": statistics.median(rss("start")),
        "first_run_peak_rss_kib": max(rss("cold")),
        "loop_ms_median": loop, "loop_ms_all": ms("loop"),
        "loop_calls_per_s": calls / (loop / 1000),
        "loop_peak_rss_kib": max(rss("loop")),
    }
json.dump(out, open(json_path, "w"), indent=2)
L = out["languages"]
rows = [
    ("component size", lambda d: f"{d['component_bytes'] / 1e6:.2f} MB"),
    ("first run, empty cache (compile + run, 1 call)", lambda d: f"{d['first_run_ms']:.0f} ms"),
    (f"per-run start, warm cache (1 call; median of {next(iter(L.values()))['start_runs']})",
     lambda d: f"{d['start_ms_median']:.0f} ms ({d['start_ms_min']:.0f}–{d['start_ms_max']:.0f})"),
    ("peak RSS, 1-call run (median)", lambda d: f"{d['start_peak_rss_kib'] / 1024:.0f} MiB"),
    ("peak RSS, first run (compiling)", lambda d: f"{d['first_run_peak_rss_kib'] / 1024:.0f} MiB"),
    (f"{calls:,}-call loop (median of {len(next(iter(L.values()))['loop_ms_all'])})",
     lambda d: f"{d['loop_ms_median'] / 1000:.2f} s"),
    (f"{calls:,}-call loop, calls/s", lambda d: f"{d['loop_calls_per_s']:.0f}"),
    (f"peak RSS, {calls:,}-call loop", lambda d: f"{d['loop_peak_rss_kib'] / 1024:.0f} MiB"),
]
with open(md_path, "w") as md:
    md.write("\n### 9. Guest languages: Rust, Python, JavaScript\n\n"
             "The same guest in each language (`bench/guests/{rust,python,js}-loop`: "
             "`Get-Mailbox -ResultSize 1`, `--count N` times, one host call each, output "
             "`{\"calls\": N}`), built as a user builds it (Rust: `cargo build --release --target "
             "wasm32-wasip2`; Python: componentize-py via `sdk/python/build.py`; JavaScript: "
             "componentize-js via `sdk/js/build.mjs`), each pinned in its own policy and run with "
             "`warden run --output json --quiet` against exosim (its own process, the demo tenant). "
             "Languages interleaved, their order rotating each repetition. The first run compiles "
             "the component into an empty `--cache-dir`; every later run loads the compiled code "
             "from that cache, which is what keeps the multi-megabyte interpreter components "
             "(CPython, SpiderMonkey) quick to start. Peak RSS is `/usr/bin/time -f %M` of the "
             "`warden` process. Command: `bash bench/guests/run.sh` (raw numbers: "
             "`bench/results/guests.json`).\n\n")
    md.write("| | " + " | ".join(names.values()) + " |\n|---|" + "---:|" * len(names) + "\n")
    for label, cell in rows:
        md.write(f"| {label} | " + " | ".join(cell(L[l]) for l in names) + " |\n")
    r = L.get("rust")
    others = [l for l in names if l != "rust"]
    if r and others:
      md.write("\nRelative to Rust: per-run start "
             + ", ".join(f"{names[l]} ×{L[l]['start_ms_median'] / r['start_ms_median']:.2f}" for l in others)
             + "; first run "
             + ", ".join(f"{names[l]} ×{L[l]['first_run_ms'] / r['first_run_ms']:.1f}" for l in others)
             + f"; {calls:,}-call loop "
             + ", ".join(f"{names[l]} ×{L[l]['loop_ms_median'] / r['loop_ms_median']:.2f}" for l in others)
             + ".\n")
    md.write(f"\nLoad average at the start {load_start}, at the end {load_end}.\n")
PY
cat "$results/guests.md"
echo "guests/run.sh: wrote $results/guests.md and $results/guests.json" >&2
