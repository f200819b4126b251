"""Issue 27 measurement, second half (the project's venv): the framework's own predictions
(foreign_train_export.py) against the nir backend with and without the firing options, and
against the emulator of the program quantised with them.

Usage: python foreign_compare.py DIR NAME [--from F --reset R --multi-spike ...]"""
import json
import subprocess
import sys

import numpy as np

folder, name, opts = sys.argv[1], sys.argv[2], sys.argv[3:]
D = [sys.executable, "-m", "dalif_deploy"]  # this venv's dalif-deploy
want = np.load(f"{folder}/{name}.pred.npy")
y = np.load(f"{folder}/test.npz")["y"]


def sim(model, backend, extra):
    out = f"{folder}/{name}.{backend}.json"
    r = subprocess.run([*D, "simulate", model, "--backend", backend, "--dataset",
                        f"{folder}/test.npz", "--json", out, *extra],
                       capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1]
    return np.array(json.load(open(out))["predictions"]), ""


def report(tag, p):
    print(f"{name} {tag}: acc {100 * np.mean(p == y):.2f} %, equal to framework "
          f"{int(np.sum(p == want))}/{len(y)}")


print(f"{name} framework acc {100 * np.mean(want == y):.2f} %  options {' '.join(opts)}")
for label, o in (("as written", [o for o in opts if o not in ("--multi-spike",)
                                 and not o.startswith("--reset")][:2] + ["-T", "8"]),
                 ("with options", opts + ["-T", "8"])):
    p, err = sim(f"{folder}/{name}.nir", "nir", o)
    if p is None:
        print(name, label, "nir refused:", err)
        continue
    report(f"nir {label}", p)
r = subprocess.run([*D, "quantize", f"{folder}/{name}.nir", "-o", f"{folder}/{name}.fxp", *opts,
                    "-T", "8", "--encoding", "events", "--calibrate", f"{folder}/train.npz"],
                   capture_output=True, text=True)
if r.returncode:
    print(name, "quantize refused:", r.stderr.strip().splitlines()[-1])
    sys.exit()
p, err = sim(f"{folder}/{name}.fxp", "emulator", [])
report("emulator", p)
