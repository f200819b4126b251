"""``verify`` on the file a user deploys: a checkpoint, a NIR graph or a fixed-point program.

A NIR graph's float reference is our NIR interpreter (``run_graph``); a program (.fxp) is run
as given (no quantisation), compared with Lava, and with a float reference only when one is
given (``--reference MODEL.nir|MODEL.pt``). The stages themselves are
:func:`dalif_deploy.verification.pipeline.run_stages`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dalif_deploy.base.errors import DaLifError

from .pipeline import (
    CALIBRATION_SAMPLES,
    VerifyOptions,
    calibration_run,
    export_round_trip,
    run_stages,
    verify_checkpoint,
)


def verify_file(path: str | Path, *, reference: str | Path | None = None,
                dataset: str | None = None, data_dir: str | None = None,
                exporter: str | None = None, dt: float | None = None,
                timesteps: int | None = None, options: VerifyOptions | None = None,
                reset: str | None = None, multi_spike: bool = False,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify the file a user deploys: a checkpoint (.pt, as :func:`verify_checkpoint`), a NIR
    graph (.nir: the float reference is our NIR interpreter; read with ``exporter``/``dt``
    (``--from``/``--dt``), ``reset``/``multi_spike`` (``--reset``/``--multi-spike``) and
    ``timesteps`` (``-T``) as ``simulate`` does, then quantised as
    ``quantize --calibrate`` does, on up to 512 training samples) or a program (.fxp: run as
    given, emulator vs Lava, and against ``reference`` (.nir or .pt) when one is given). The
    verified program is ``artefacts["program"]``; stages that do not apply report ``None``
    and ``result["absent"]`` says why."""
    from dalif_deploy.targets.registry import file_kind

    kind = file_kind(path)
    extra = [f for f, v in (("--from", exporter), ("--dt", dt), ("-T", timesteps),
                            ("--reset", reset), ("--multi-spike", multi_spike or None))
             if v is not None]
    firing = (reset, multi_spike)
    if kind == "checkpoint":
        if reference is not None or extra:
            given = ", ".join((["--reference"] if reference is not None else []) + extra)
            raise DaLifError(f"{path}: {given}: not for a checkpoint (it is its own float "
                             "reference and records its T and dt); drop it")
        return verify_checkpoint(path, dataset=dataset, data_dir=data_dir, options=options)
    if kind == "nir":
        if reference is not None:
            raise DaLifError(f"{path}: --reference applies to a program (.fxp); a NIR graph is "
                             "its own float reference, drop --reference")
        return _verify_graph(path, dataset, data_dir, exporter, dt, timesteps,
                             options or VerifyOptions(), firing)
    if kind == "program":
        ref_kind = file_kind(reference) if reference is not None else None
        if ref_kind not in (None, "nir", "checkpoint"):
            raise DaLifError(f"--reference {reference}: give a NIR graph (.nir) or a "
                             "checkpoint (.pt)")
        if [f for f in extra if f != "-T"] and ref_kind != "nir" or timesteps is not None:
            raise DaLifError(f"{path}: {', '.join(extra)} apply only to a NIR graph (the "
                             "program records its T); drop them, or give --reference MODEL.nir")
        return _verify_program(path, reference, ref_kind, dataset, data_dir, exporter, dt,
                               options or VerifyOptions(), firing)
    raise DaLifError(f"{path}: verify takes a checkpoint (.pt), a NIR graph (.nir) or a "
                     "fixed-point program (.fxp)")


def _graph_reading(path: str | Path, exporter: str | None, dt: float | None,
                   firing: tuple[str | None, bool] = (None, False)) -> Any:
    from dalif_deploy.converters.nir_conventions import read_graph

    return read_graph(Path(path), exporter, dt, *firing)


def _verify_graph(path: str | Path, dataset: str | None, data_dir: str | None,
                  exporter: str | None, dt: float | None, timesteps: int | None,
                  opt: VerifyOptions, firing: tuple[str | None, bool] = (None, False)
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    from dalif_deploy.converters.ir.graph import infer_shapes, io_nodes, output_classes
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.targets.nir_float import graph_timesteps
    from dalif_deploy.targets.registry import load_for_model

    t0 = time.perf_counter()
    reading = _graph_reading(path, exporter, dt, firing)
    graph = reading.graph
    md = graph.metadata or {}
    in_shape = infer_shapes(graph)[io_nodes(graph)[0]]
    enc = md.get("input_encoding")
    enc = None if enc is None else str(enc)
    t_given = timesteps if timesteps is not None else md.get("timesteps")

    def split(name: str, n: int | None) -> Any:
        return load_for_model(path, dataset, name, data_dir, n, encoding=enc,
                              input_shape=in_shape, timesteps=t_given, made_for=md.get(
                                  "dataset"), at_most=True, classes=output_classes(graph),
                              warn_values=name == "test")

    test, calib = split("test", None), split("train", CALIBRATION_SAMPLES)
    T = graph_timesteps(graph, test.x, test.encoding, timesteps)
    seconds = {"load": round(time.perf_counter() - t0, 3)}
    t0 = time.perf_counter()
    program = quantize_graph(graph, opt.weight_bits, calibration=calib.x,
                             run=calibration_run(opt), timesteps=timesteps,
                             encoding=None if enc else test.encoding, dt=reading.dt)
    seconds["quantize"] = round(time.perf_counter() - t0, 3)
    if program.timesteps != T:
        raise DaLifError(f"{path}: the program runs T={program.timesteps} but the data need "
                         f"T={T}; give -T {T}")
    return run_stages(program, test, name=str(md.get("model_name", Path(path).stem)),
                       source=str(path), graph=graph, dt=reading.dt, options=opt,
                       seconds=seconds, absent={"float": "a NIR graph has no torch model: the "
                                                "reference is the NIR interpreter"})


def _verify_program(path: str | Path, reference: str | Path | None, ref_kind: str | None,
                    dataset: str | None, data_dir: str | None, exporter: str | None,
                    dt: float | None, opt: VerifyOptions,
                    firing: tuple[str | None, bool] = (None, False)
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    from dalif_deploy.fixedpoint.fxp_format import load_program
    from dalif_deploy.targets.registry import load_for_model

    t0 = time.perf_counter()
    program = load_program(path)
    md = program.metadata
    bits = {int(s.weight_bits) for s in program.synapses}
    if opt.weight_bits != 8 and bits != {opt.weight_bits}:
        raise DaLifError(f"{path}: --weight-bits {opt.weight_bits}: a program is verified as "
                         f"given (its weights have {sorted(bits)} bits); quantize the graph "
                         "again with --weight-bits, or verify the .nir/.pt with it")
    test = load_for_model(path, dataset, "test", data_dir, None, encoding=program.input.kind,
                          input_shape=program.input.shape, timesteps=program.timesteps,
                          made_for=md.get("dataset"), classes=program.classes)
    model = graph = None
    read_dt = None
    absent = {}
    if ref_kind == "checkpoint":
        from dalif_deploy.float_model.loading import load_model

        model, ckpt = load_model(reference)
        if ckpt.timesteps != program.timesteps:
            raise DaLifError(f"--reference {reference}: the checkpoint runs T={ckpt.timesteps}, "
                             f"the program T={program.timesteps}; give the matching checkpoint")
        graph = export_round_trip(model, test, ckpt.timesteps, ckpt.model_name, None, opt)
    elif ref_kind == "nir":
        reading = _graph_reading(reference, exporter, dt, firing)
        graph, read_dt = reading.graph, reading.dt
        absent["float"] = "the reference is a NIR graph, run by the NIR interpreter"
    else:
        why = "a program alone has no float reference: give --reference MODEL.nir|MODEL.pt"
        absent = {"float": why, "nir": why}
    seconds = {"load": round(time.perf_counter() - t0, 3)}
    return run_stages(program, test, name=str(md.get("model_name", Path(path).stem)),
                       source=str(path), model=model, graph=graph, dt=read_dt, options=opt,
                       seconds=seconds, absent=absent)
