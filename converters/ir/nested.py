"""Nested NIR subgraphs inlined into their parent graph, before the graph is built.

snnTorch writes each recurrent layer (RLeaky, RSynaptic) as a nested ``NIRGraph`` node; the rest
of the project reads flat graphs, so :func:`flatten_subgraphs` inlines them on the dict that
``nir.serialization.hdf2dict`` reads from the file.
"""

from __future__ import annotations

from typing import Any

from dalif_deploy.base.errors import DaLifError


def _type_name(node: Any) -> Any:
    t = node.get("type") if isinstance(node, dict) else None
    return t.decode("utf8", "replace") if isinstance(t, bytes) else t


def _text(v: Any) -> str:
    return v.decode("utf8", "replace") if isinstance(v, bytes) else str(v)


#: how deep nested subgraphs may go (snnTorch nests one level: a recurrent layer)
NESTING_MAX = 8


def flatten_subgraphs(d: dict[str, Any], depth: int = 0) -> None:
    """Inline every nested ``NIRGraph`` node of a graph dict (as ``hdf2dict`` reads it), in
    place: subgraph ``lif1``'s nodes become ``lif1.<name>``, its Input and Output nodes go, and
    edges into ``lif1`` go to the nodes its Input fed, edges out of it leave from the nodes that
    fed its Output. snnTorch writes each RLeaky/RSynaptic so: ``{input, lif, w_rec, output}``
    with the loop ``lif -> w_rec -> lif`` (the names ``lif1.lif``, ``lif1.w_rec`` of the NIR
    paper's braille graph)."""
    if depth > NESTING_MAX:
        raise DaLifError(f"subgraphs nested more than {NESTING_MAX} deep")
    nodes = d.get("nodes", {})
    edges = [(_text(a), _text(b)) for a, b in d.get("edges", [])]
    for name in [k for k, v in nodes.items() if _type_name(v) == "NIRGraph"]:
        sub = nodes.pop(name)
        flatten_subgraphs(sub, depth + 1)
        inner = sub.get("nodes", {})
        ins = [k for k, v in inner.items() if _type_name(v) == "Input"]
        outs = [k for k, v in inner.items() if _type_name(v) == "Output"]
        if len(ins) != 1 or len(outs) != 1:
            raise DaLifError(f"nested subgraph {name!r} needs exactly one Input and one Output "
                             f"node, has inputs {ins} and outputs {outs}")
        for k, v in inner.items():
            if k not in (ins[0], outs[0]):
                if f"{name}.{k}" in nodes:
                    raise DaLifError(f"nested subgraph {name!r}: its node {k!r} would be named "
                                     f"{name}.{k}, which the graph already has")
                nodes[f"{name}.{k}"] = v
        ends = {ins[0]: "@in", outs[0]: "@out"}  # the subgraph's two ends, named apart
        links = [tuple(ends.get(_text(k), f"{name}.{_text(k)}") for k in e)
                 for e in sub.get("edges", [])]
        heads = [t for s, t in links if s == "@in"]
        tails = [s for s, t in links if t == "@out"]
        if ("@in", "@out") in links:  # an Input -> Output edge: the subgraph passes through
            heads, tails = heads + ["@out"], tails + ["@in"]
        feeds = [a for a, b in edges if b == name]
        new: list[tuple[str, str]] = []
        for a, b in edges:  # the outer edges in file order, each end inlined
            srcs = [s for s in tails if s != "@in"] + (feeds if "@in" in tails else []) \
                if a == name else [a]
            dsts = [t for t in heads if t != "@out"] if b == name else [b]
            new += [(s, t) for s in srcs for t in dsts if (s, t) not in new]
        edges = new + [e for e in links if "@in" not in e and "@out" not in e]
    d["edges"] = edges
