"""The backends' own options, declared where the command line reads them without importing a
backend (the backend modules import torch, numpy, onnxruntime): ``simulate --help`` and its
argument errors import none of those. Each backend class uses its tuple here as its
``options``, and its registry entry (:data:`dalif_deploy.targets.registry.BACKENDS`) names the
same tuple; the registry checks they agree when it imports the class."""

from __future__ import annotations

from dalif_deploy.fixedpoint.hardware import HARDWARE_FILE_HELP, HARDWARE_SET_HELP
from dalif_deploy.fixedpoint.limits import LAVA_MEMORY_GIB_DEFAULT, LAVA_PROCESSES_DEFAULT

from .protocol import Option

#: the options both NIR backends take (a foreign graph's conventions, nir_conventions)
DT_OPTION = Option("dt", float, "time step of a foreign NIR graph (overrides --from's; "
                   "required with plain NIR)")
EXPORTER_OPTION = Option("exporter", str, "framework that exported a foreign NIR graph: "
                         "snntorch (dt 1e-4, Euler), sinabs (dt 1, exact decay), spikingjelly "
                         "(dt 1e-4, Euler, fires on >=), norse (dt 1e-3, Euler) or nir (give "
                         "--dt)", metavar="EXPORTER", flags=("--from",))
RESET_OPTION = Option("reset", str, "how a foreign graph's neurons reset, which NIR cannot "
                      "say: zero or subtract, in the exporter's own timing (default: as the "
                      "file says, v := v_reset; subtract for files written by nir <= 1.0.5)",
                      metavar="zero|subtract")
MULTI_SPIKE_OPTION = Option("multi_spike", bool, "a foreign graph's neurons send spike counts "
                            "(Sinabs' MultiSpike: floor(v / threshold) spikes, subtracted "
                            "with --reset subtract)", switch=True)
TIMESTEPS_OPTION = Option("timesteps", int, "T for a NIR graph that records none (foreign "
                          "graphs on static data)", metavar="T", flags=("--timesteps", "-T"))
NIR_OPTIONS = (DT_OPTION, EXPORTER_OPTION, TIMESTEPS_OPTION, RESET_OPTION, MULTI_SPIKE_OPTION)

#: ``--device`` of the emulator backend (and of ``verify``)
DEVICE = Option("device", str, "torch device of the emulator: cpu, cuda or cuda:N; the same "
                "integers on every device (default: cpu)", metavar="DEV")
#: ``--kernels`` of the emulator backend (and of ``verify``)
KERNELS_OPTION = Option("kernels", str, "emulator: conv kernels: auto (int8 where self-tested "
                        "exact, else float32), float32, int8, or check (both, every integer "
                        "compared)", "auto", metavar="KIND")
EMULATOR_OPTIONS = (Option("hardware", str, HARDWARE_FILE_HELP, metavar="FILE.json"),
                    Option("hw", str, HARDWARE_SET_HELP, metavar="NAME=VALUE", repeat=True),
                    DEVICE, KERNELS_OPTION)

#: the Lava run guard's limits (lava.run.check_lava_budget; also verify's options); unset: its
#: defaults
LAVA_LIMITS = (
    Option("max_lava_processes", int, "lava: refuse a network of more than N Lava processes "
           f"(default {LAVA_PROCESSES_DEFAULT})", metavar="N"),
    Option("max_lava_memory", float, "lava: refuse a run estimated above GIB GiB of memory "
           f"(default {LAVA_MEMORY_GIB_DEFAULT:g})", metavar="GIB"),
)
LAVA_OPTIONS = (Option("timeout", float, "lava: watchdog timeout (s)", 600.0), *LAVA_LIMITS)
