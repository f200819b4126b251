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
                         "snntorch (dt 1e-4, Euler), sinabs (dt 1, exact decay), norse (dt "
                         "1e-3, Euler) or nir (give --dt)", metavar="EXPORTER",
                         flags=("--from",))
TIMESTEPS_OPTION = Option("timesteps", int, "T for a NIR graph that records none (foreign "
                          "graphs on static data)", metavar="T", flags=("--timesteps", "-T"))
NIR_OPTIONS = (DT_OPTION, EXPORTER_OPTION, TIMESTEPS_OPTION)

#: ``--device`` of the emulator backend (and of ``verify``)
DEVICE = Option("device", str, "torch device of the emulator: cpu, cuda or cuda:N; the same "
                "integers on every device (default: cpu)", metavar="DEV")
EMULATOR_OPTIONS = (Option("hardware", str, HARDWARE_FILE_HELP, metavar="FILE.json"),
                    Option("hw", str, HARDWARE_SET_HELP, metavar="NAME=VALUE", repeat=True),
                    DEVICE)

#: the Lava run guard's limits (lava.run.check_lava_budget; also verify's options); unset: its
#: defaults
LAVA_LIMITS = (
    Option("max_lava_processes", int, "lava: refuse a network of more than N Lava processes "
           f"(default {LAVA_PROCESSES_DEFAULT})", metavar="N"),
    Option("max_lava_memory", float, "lava: refuse a run estimated above GIB GiB of memory "
           f"(default {LAVA_MEMORY_GIB_DEFAULT:g})", metavar="GIB"),
)
LAVA_OPTIONS = (Option("timeout", float, "lava: watchdog timeout (s)", 600.0), *LAVA_LIMITS)
