"""dalif-deploy: DA-LIF spiking networks from PyTorch to NIR, Loihi 2 fixed point and Lava.

The public API is re-exported here; modules not listed are private.
"""

__version__ = "0.1.0"

from .errors import DaLifError, LavaRunError, VerificationFailed
from .models import build_model, dalif_layers, default_config, run_model
from .neuron import DALIF, PARAMETRIZATIONS, SURROGATES, dalif_step, reset_states

__all__ = [
    "__version__",
    "DALIF",
    "DaLifError",
    "LavaRunError",
    "PARAMETRIZATIONS",
    "SURROGATES",
    "VerificationFailed",
    "build_model",
    "dalif_layers",
    "dalif_step",
    "default_config",
    "reset_states",
    "run_model",
]
