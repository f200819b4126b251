"""Layer 7, studies built on verify: precision sweeps, quantisation-aware fine-tuning, neuron
comparisons."""
