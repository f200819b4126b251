"""Issue 26 measurement, run OUTSIDE the project in a scratch venv (torch 2.13.0 CPU,
snntorch 1.0.0, nir 1.0.8): train a tiny recurrent net in snnTorch on digits-rows (a row of
the digit per step, T = 8), record snnTorch's own test predictions and export NIR with
snnTorch's `export_to_nir` (docs/MEASURED.md, "Recurrent networks").

Usage: python foreign_recurrent_export.py DIR NAME [EPOCHS, default 20], DIR holding train.npz
and test.npz from `dalif-deploy dataset digits-rows`; NAME one of snntorch-rleaky,
snntorch-rsynaptic. Net: Flatten, Linear(24, 64), RLeaky or RSynaptic (all_to_all, reset zero),
Linear(64, 10), Leaky (reset zero). Writes DIR/NAME.nir and DIR/NAME.pred.npy; then compare with
the project's CLI (simulate --backend nir|norse --from snntorch, verify --from snntorch)."""
import sys

import nir
import numpy as np
import snntorch as snn
import snntorch.utils as su
import torch
from snntorch import surrogate
from snntorch.export_nir import export_to_nir

torch.manual_seed(0)
np.random.seed(0)
folder, name = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
tr, te = np.load(f"{folder}/train.npz"), np.load(f"{folder}/test.npz")
xtr, ytr = torch.tensor(tr["x"]), torch.tensor(tr["y"]).long()
xte, yte = torch.tensor(te["x"]), torch.tensor(te["y"]).long()
T, H = 8, 64
C = int(np.prod(xtr.shape[2:]))


def recurrent(n: int) -> torch.nn.Module:
    kw = dict(linear_features=n, all_to_all=True, reset_mechanism="zero", init_hidden=True,
              threshold=1.0, spike_grad=surrogate.atan())
    if name == "snntorch-rleaky":
        return snn.RLeaky(beta=torch.full((n,), 0.8), **kw)
    return snn.RSynaptic(alpha=torch.full((n,), 0.5), beta=torch.full((n,), 0.8), **kw)


out = snn.Leaky(beta=torch.full((10,), 0.8), threshold=torch.ones(10), init_hidden=True,
                reset_mechanism="zero", spike_grad=surrogate.atan(), output=True)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C, H), recurrent(H),
                          torch.nn.Linear(H, 10), out)


def run(x: torch.Tensor) -> torch.Tensor:
    su.reset(net)
    for m in net.modules():  # su.reset leaves RSynaptic's spk attached to the last batch's graph
        if hasattr(m, "reset_mem"):
            m.reset_mem()
    count = 0
    for t in range(T):
        o = net(x[:, t])
        count = count + (o[0] if isinstance(o, tuple) else o)
    return count


opt = torch.optim.Adam(net.parameters(), 5e-3)
for _epoch in range(epochs):
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 32):
        idx = perm[i:i + 32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(run(xtr[idx]), ytr[idx]).backward()
        opt.step()
with torch.no_grad():
    pred = run(xte).argmax(1).numpy()
print(name, "framework acc", float((pred == yte.numpy()).mean()))
np.save(f"{folder}/{name}.pred.npy", pred)
su.reset(net)
g = export_to_nir(net, xte[:4, 0], ignore_dims=[0])
nir.write(f"{folder}/{name}.nir", g)
print("wrote", name, {k: type(v).__name__ for k, v in g.nodes.items()}, g.edges)
