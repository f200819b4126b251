"""Layer 2, the float model: zoo, time loop, checkpoints, training."""
