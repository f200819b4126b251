"""Path lengths through a fixed-point program: how many steps an input takes to reach each
population when every synapse adds one step of latency (the emulator's pipelined mode and the
Lava lowering's delays and reset offsets both follow from it).

A recurrent synapse (a population back to itself) does not count: its one step of latency is the
recurrence's own one-step delay (docs/DESIGN.md section 5), so it needs no delay of its own and
leaves every depth unchanged."""

from __future__ import annotations

from dalif_deploy.base.errors import DaLifError

from .program import FixedProgram


def synaptic_depths(program: FixedProgram) -> dict[str, int]:
    """Longest synapse path from the input to each population (the input has depth 0).

    ``depth(input) = 0``, ``depth(P) = 1 + max over synapses S -> P of depth(source(S))``:
    every synapse adds one step. Recurrent synapses are left out (a cycle has no depth; their
    step of latency is the recurrence's delay).
    """
    depth = {"input": 0}
    for p in program.populations:  # program order is topological
        inc = [s for s in program.incoming(p.name) if not s.recurrent]
        if any(s.source not in depth for s in inc):
            raise DaLifError(f"population {p.name} has an input from a later population; "
                             "programs must list populations in topological order")
        depth[p.name] = 1 + max((depth[s.source] for s in inc), default=0)
    return depth


def synapse_delays(program: FixedProgram, depth: dict[str, int] | None = None
                   ) -> dict[str, int]:
    """Extra latency each synapse needs so that residual branches meet in step.

    ``delay(S) = depth(target(S)) - depth(source(S)) - 1`` (0 on a longest path): a synapse
    whose source is shallower than the target's deepest source waits that many steps. The
    constraint check refuses delays above ``limits.MAX_DELAY``; the Lava lowering uses these.
    ``depth`` defaults to :func:`synaptic_depths`. A recurrent synapse has delay 0: Lava's one
    step per synapse is exactly the recurrence's delay.
    """
    depth = synaptic_depths(program) if depth is None else depth
    return {s.name: 0 if s.recurrent else depth[s.target] - depth[s.source] - 1
            for s in program.synapses}
