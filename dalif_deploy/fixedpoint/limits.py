"""Every Loihi 2 / Lava hardware limit the project relies on, named once (docs/ARCHITECTURE.md).

Figures are Lava 0.10.0's bit-accurate CUBA LIF, Dense, Conv and DelaySparse models as measured
(docs/MEASURED.md). Nothing else in the project writes these numbers as literals.
"""

from __future__ import annotations

# neuron state
V_MAX = 2**23 - 1  # v saturates at +-(2^23 - 1)
U_LIMIT = 2**23  # u > U_LIMIT wraps down by 2^24; u <= -U_LIMIT wraps up
VTH_MAX = 2**17 - 1  # vth is 17-bit unsigned; compared as vth << 6
DECAY_BITS = 12  # du, dv are 12-bit unsigned
DECAY_UNIT = 2**DECAY_BITS  # decays act as (4096 - d) / 4096
DECAY_MAX = DECAY_UNIT - 1  # 4095: du = 4095 leaves no current memory
BIAS_MANT_MAX = 2**12 - 1  # 13-bit signed mantissa
BIAS_EXP_RANGE = (-8, 7)
# synapses
WEIGHT_BITS_RANGE = (1, 8)  # weight mantissa bits
WEIGHT_EXP_RANGE = (-8, 7)  # Loihi weight exponent
LAVA_WEIGHT_CLIP = (-256, 255)  # Lava's Dense clips raw weights to this (mixed sign; else 0..255)
SIGN_RANGES = {"mixed": (-128, 127), "excitatory": (0, 255), "inhibitory": (-255, 0)}
CONV_BITS = 24  # Lava's Conv wraps its output to signed 24 bits
LAVA_CONV_PARAM_MAX = 127  # Lava's Conv stores kernel size, stride, padding, groups as int8
MAX_DELAY = 63  # DelaySparse delays are 6-bit
INT32_SAFE = (2**31 - 2**23) // 64  # |a| above this overflows Lava's int32 (a << 6) + u
FAN_IN_MAX = 4096  # nonzero synapses into one neuron that we accept without a warning
# lava-dl netx 0.6.0 (converters/fxp_to_netx.py): its CUBA neuron fixes bias_exp = 6, and its
# Dense keeps integer weights in this range exactly (optimize_weight_bits)
NETX_BIAS_EXP = 6
NETX_DENSE_RANGE = (-256, 254)
# graded spikes out of a population (spike counts): our lowering sends graded messages of 8
# bits (num_message_bits = 8), the signed range of the graded analog input
GRADED_PAYLOAD_MAX = 127
# input
INPUT_BITS_RANGE = (2, 8)  # graded (analog) input spikes
# run length
TIMESTEPS_MAX = 2**16  # steps per sample; DA-LIF networks use tens to hundreds
# exact integer ranges of float types (the emulator's exactness proofs)
FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53
# Lava simulation on this machine (targets/lava/run.py check_lava_budget; every Lava process is
# an OS process): default refusal limits, raised with --max-lava-processes / --max-lava-memory
LAVA_PROCESSES_DEFAULT = 256
LAVA_MEMORY_GIB_DEFAULT = 8.0
