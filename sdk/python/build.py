"""Builds a Python plugin into a warden component, in one command:

    sdk/python/.venv/bin/python sdk/python/build.py PLUGIN_DIR -o PLUGIN.wasm

PLUGIN_DIR holds ``app.py`` (the module that assigns ``WitWorld = warden_sdk.plugin(run)``)
and ``manifest.json`` (``warden plugin embed-manifest --help`` gives its format). It runs

1. ``componentize-py -d wit -w plugin componentize --stub-wasi app`` with PLUGIN_DIR and this
   SDK on the Python path. ``--stub-wasi`` replaces every WASI import with a trap, so the
   component imports only ``warden:plugin`` (componentize-py's CPython otherwise imports
   ``wasi:sockets``, which warden refuses). The SDK sends ``print`` and tracebacks to the
   operator's log instead. Python's ``random`` seed is then fixed at build time: never use it
   for anything secret (a plugin has no secret to keep).
2. ``warden plugin embed-manifest`` to write the manifest into the component.
3. With ``--pin POLICY``: ``warden policy pin POLICY PLUGIN.wasm``, so the grant names this build
   (each build has its own sha256: the baked-in random seed differs).

Options: ``--module`` (default ``app``), ``--wit`` (default: the repository's ``wit/``),
``--warden`` (default: ``$WARDEN``, else ``warden`` on PATH), ``--componentize-py``
(default: the one beside this Python, i.e. the venv's).
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parent


def _fail(message):
    print(f"build.py: {message}", file=sys.stderr)
    sys.exit(1)


def _componentize_py(given):
    if given:
        return given
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("componentize-py")
    if not found:
        _fail("componentize-py is not installed\n  fix: bash sdk/python/setup.sh, then run "
              "this with sdk/python/.venv/bin/python")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plugin_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--module", default="app")
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--pin", type=Path, metavar="POLICY")
    parser.add_argument("--wit", type=Path, default=SDK_DIR.parent.parent / "wit")
    parser.add_argument("--warden", default=os.environ.get("WARDEN") or "warden")
    parser.add_argument("--componentize-py", dest="componentize_py")
    args = parser.parse_args()

    manifest = args.manifest or args.plugin_dir / "manifest.json"
    if not manifest.is_file():
        _fail(f"{manifest}: no manifest\n  fix: write it (`warden plugin embed-manifest --help` "
              "gives the format)")
    if not (args.wit / "plugin.wit").is_file():
        _fail(f"{args.wit}: no plugin.wit there\n  fix: give --wit the warden repository's wit/")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    componentize = [
        _componentize_py(args.componentize_py), "-q",
        "-d", str(args.wit), "-w", "plugin",
        "componentize", "--stub-wasi",
        "-p", str(args.plugin_dir), "-p", str(SDK_DIR),
        args.module, "-o", str(args.output),
    ]
    # No VIRTUAL_ENV: componentize-py would add the venv's site-packages (the toolchain itself)
    # to the component.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    if subprocess.run(componentize, env=env).returncode != 0:
        _fail("componentize-py failed (its message is above)")
    embed = [args.warden, "plugin", "embed-manifest", str(args.output), "--manifest", str(manifest)]
    try:
        done = subprocess.run(embed)
    except FileNotFoundError:
        _fail(f"{args.warden}: not found\n  fix: put warden on PATH, or give --warden / $WARDEN")
    if done.returncode != 0:
        _fail("warden plugin embed-manifest failed (its message is above)")
    if args.pin and subprocess.run(
        [args.warden, "policy", "pin", str(args.pin), str(args.output)]
    ).returncode != 0:
        _fail("warden policy pin failed (its message is above)")


if __name__ == "__main__":
    main()
