"""Issue 27 measurement, run OUTSIDE the project in a scratch venv (torch 2.13.0 CPU, nir 1.0.8,
nirtorch 2.6; snntorch 1.0.0, sinabs 3.1.3, spikingjelly 2.0.0 with --no-deps, plus loguru,
pbr, matplotlib): train tiny nets in snnTorch 1.0.0,
Sinabs 3.1.3 and SpikingJelly 2.0.0 on digits-events (T = 8), record the framework's own test
predictions, export NIR with the framework's exporter (docs/MEASURED.md, "Issue 27").

Usage: python foreign_train_export.py DIR NAME, DIR holding train.npz and test.npz from
`dalif-deploy dataset digits-events`; NAME one of snntorch-leaky-sub, snntorch-syn-zero,
sinabs-iaf-conv, sinabs-lif-mlp, spikingjelly-lif-mlp. Writes DIR/NAME.nir and
DIR/NAME.pred.npy; then run foreign_compare.py in the project's venv."""
import sys

import nir
import numpy as np
import torch

torch.manual_seed(0)
np.random.seed(0)
folder, name = sys.argv[1], sys.argv[2]
tr, te = np.load(f"{folder}/train.npz"), np.load(f"{folder}/test.npz")
xtr, ytr = torch.tensor(tr["x"]), torch.tensor(tr["y"]).long()
xte, yte = torch.tensor(te["x"]), torch.tensor(te["y"]).long()
T, H = 8, 64


def run_snntorch(net, x):
    import snntorch.utils as su
    su.reset(net)
    count = 0
    for t in range(T):
        out = net(x[:, t])
        spk = out[0] if isinstance(out, tuple) else out
        count = count + spk
    return count


def run_sinabs(net, x):
    """Sinabs' Squeeze layers take [B*T, ...] (batch-major) and unflatten it by num_timesteps."""
    for m in net.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()
    b = x.shape[0]
    out = net(x.reshape(b * T, *x.shape[2:]))
    return out.reshape(b, T, -1).sum(1)


def run_sj(net, x):
    from spikingjelly.activation_based import functional
    functional.reset_net(net)
    count = 0
    for t in range(T):
        count = count + net(x[:, t])
    return count


def build():
    if name.startswith("snntorch"):
        import snntorch as snn
        from snntorch import surrogate
        kw = dict(reset_mechanism="zero") if name == "snntorch-syn-zero" else {}
        if name == "snntorch-syn-zero":
            def neuron(n):
                return snn.Synaptic(alpha=torch.full((n,), 0.5), beta=torch.full((n,), 0.8),
                                    threshold=torch.ones(n), init_hidden=True, **kw)
        else:
            def neuron(n):
                return snn.Leaky(beta=torch.full((n,), 0.8), threshold=torch.ones(n),
                                 init_hidden=True, spike_grad=surrogate.atan(), **kw)
        l2 = neuron(10)
        l2.output = True
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, H), neuron(H),
                                   torch.nn.Linear(H, 10), l2), run_snntorch
    if name.startswith("sinabs"):
        import sinabs.layers as sl
        if name == "sinabs-iaf-conv":
            net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1),
                                      sl.IAFSqueeze(num_timesteps=T), torch.nn.Flatten(),
                                      torch.nn.Linear(8 * 64, 10), sl.IAFSqueeze(num_timesteps=T))
        else:
            net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, H),
                                      sl.LIFSqueeze(tau_mem=torch.tensor(4.0), num_timesteps=T),
                                      torch.nn.Linear(H, 10),
                                      sl.LIFSqueeze(tau_mem=torch.tensor(4.0), num_timesteps=T))
        return net, run_sinabs
    from spikingjelly.activation_based import neuron
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, H),
                              neuron.LIFNode(tau=2.0), torch.nn.Linear(H, 10),
                              neuron.LIFNode(tau=2.0))
    return net, run_sj


net, run = build()
opt = torch.optim.Adam(net.parameters(), 5e-3)
for _epoch in range(6):
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 32):
        idx = perm[i:i + 32]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(run(net, xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
with torch.no_grad():
    pred = run(net, xte).argmax(1).numpy()
print(name, "framework acc", float((pred == yte.numpy()).mean()))
np.save(f"{folder}/{name}.pred.npy", pred)
x1 = xte[:4, 0]
if name.startswith("snntorch"):
    from snntorch.export_nir import export_to_nir
    g = export_to_nir(net, x1, ignore_dims=[0])
elif name.startswith("sinabs"):
    from sinabs.nir import to_nir
    x1 = xte[:1].reshape(T, *xte.shape[2:])  # one sample's T frames, [1*T, ...]
    with torch.no_grad():
        run(net, xte[:1])  # states shaped [B, ...]: Sinabs' IF mapping reads v_mem.shape[1:]
    g = to_nir(net, x1)
    # the repair nir.write needs (docs/MEASURED.md): each neuron parameter broadcast to its
    # layer's shape (rebuilt nodes), tensors as numpy, then types inferred
    k = 0
    sizes = [(H,), (10,)] if name == "sinabs-lif-mlp" else [(8, 8, 8), (10,)]

    def arr(v, size):
        return np.asarray(torch.as_tensor(v).detach(), np.float32) * np.ones(size, np.float32)

    for n in list(g.nodes):
        node = g.nodes[n]
        if isinstance(node, nir.LIF):
            size = sizes[k]
            k += 1
            g.nodes[n] = nir.LIF(tau=arr(node.tau, size), r=arr(node.r, size),
                                 v_leak=arr(node.v_leak, size),
                                 v_threshold=arr(node.v_threshold, size),
                                 v_reset=arr(0.0, size))
        elif isinstance(node, nir.IF):
            size = sizes[k]
            k += 1
            g.nodes[n] = nir.IF(r=arr(node.r, size), v_threshold=arr(node.v_threshold, size),
                                v_reset=arr(0.0, size))
        else:
            for f, v in list(vars(node).items()):
                if isinstance(v, torch.Tensor):
                    setattr(node, f, v.detach().numpy())
    g.infer_types()
else:
    from spikingjelly.activation_based.nir_exchange import export_to_nir as sj_export
    g = sj_export(net, x1)
nir.write(f"{folder}/{name}.nir", g)
print("wrote", name, {k: type(v).__name__ for k, v in g.nodes.items()})
