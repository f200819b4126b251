"""Issue 26 measurement, second half (the project's venv): snnTorch's own predictions
(foreign_recurrent_export.py) against `simulate --backend nir|norse` and `verify` of the
exported recurrent graph (docs/MEASURED.md, "Recurrent networks").

Usage: python foreign_recurrent_compare.py DIR NAME [--probe-zero-next] [CLI options ...]
(default CLI options: --from snntorch). --probe-zero-next reads each recurrent LIF (a node
named '*.lif', snnTorch's nested RLeaky) with reset zero-next, in this process only: the
measurement of what reading RLeaky's delayed zero reset would recover."""
import json
import sys

import dalif_deploy.converters.nir_conventions as conventions
import numpy as np

from dalif_deploy.cli import main

folder, name, opts = sys.argv[1], sys.argv[2], sys.argv[3:]
if "--probe-zero-next" in opts:
    opts.remove("--probe-zero-next")
    state_firing = conventions._state_firing

    def rleaky_zero_next(graph, *args):  # snnTorch RLeaky: mem := 0 the step after a spike
        notes = state_firing(graph, *args)
        for n, node in graph.nodes.items():
            if n.endswith(".lif") and (node.metadata or {}).get("reset_mode") == "zero":
                node.metadata["reset_mode"] = "zero-next"
        return notes
    conventions._state_firing = rleaky_zero_next
opts = opts or ["--from", "snntorch"]
want = np.load(f"{folder}/{name}.pred.npy")
test = f"{folder}/test.npz"
y = np.load(test)["y"]
print(f"{name} framework acc {100 * np.mean(want == y):.2f} %  options {' '.join(opts)}")
for backend in ("nir", "norse"):
    out = f"{folder}/{name}.{backend}.json"
    rc = main(["simulate", f"{folder}/{name}.nir", "--backend", backend, "--dataset", test,
               "-T", "8", "--json", out, *opts])
    if rc:
        print(name, backend, "refused, exit", rc)
        continue
    p = np.array(json.load(open(out))["predictions"])
    print(f"{name} {backend}: acc {100 * np.mean(p == y):.2f} %, equal to snnTorch "
          f"{int(np.sum(p == want))}/{len(y)}")
out = f"{folder}/{name}.verify.json"
rc = main(["verify", f"{folder}/{name}.nir", "--dataset", test, "-T", "8", "--lava-samples",
           "8", "--min-agreement", "0", "--max-accuracy-drop", "100", "--json", out, *opts])
print(name, "verify exit", rc)
