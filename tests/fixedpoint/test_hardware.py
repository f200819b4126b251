"""Hardware figures of the cost model overridden from Python, a JSON file and --hw NAME=VALUE
on inspect, simulate --backend emulator and verify: refused in one line when wrong, recorded in
the JSON when right."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers import REPO_ROOT

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.fixedpoint import cost
from dalif_deploy.fixedpoint.fxp_format import save_program
from dalif_deploy.fixedpoint.hardware import FIGURES, Hardware, hardware, parse_assignment
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
)

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def test_every_figure_can_be_set_by_name_and_is_recorded():
    for f in dataclasses.fields(Hardware):
        new = "X" if f.name == "name" else f.default + 1
        hw = hardware(assignments=[f"{f.name}={new}"])
        assert getattr(hw, f.name) == new and hw.overrides() == {f.name: new}
    assert Hardware().overrides() == {} and FIGURES[0] == "name"


def test_assignments_parse_numbers_and_apply_after_the_file(tmp_path):
    assert parse_assignment("energy_synop_pj = 1e1") == ("energy_synop_pj", 10.0)
    f = tmp_path / "hw.json"
    f.write_text(json.dumps({"neurons_per_core": 4096, "energy_ac_pj": 0.03}))
    hw = hardware(f, assignments=["neurons_per_core=2048"])
    assert hw.overrides() == {"neurons_per_core": 2048, "energy_ac_pj": 0.03}
    assert hardware(hw) == hw  # a Hardware passes through unchanged
    assert hardware(assignments=["neurons_per_core=4096.0"]).neurons_per_core == 4096


@pytest.mark.parametrize("item,words", [
    ("neurons_per_cor=1", "unknown hardware figure 'neurons_per_cor'; known: name, "),
    ("neurons_per_core", "give NAME=VALUE"),
    ("=3", "give NAME=VALUE"),
    ("neurons_per_core=abc", "takes a number"),
    ("neurons_per_core=true", "takes a number"),
    ("neurons_per_core=1.5", "neurons_per_core: must be an integer in [1, "),
    ("neurons_per_core=0", "neurons_per_core: must be an integer in [1, "),
    ("energy_synop_pj=-1", "energy_synop_pj: must be a finite number >= 0"),
    ("energy_synop_pj=NaN", "energy_synop_pj: must be a finite number >= 0"),
])
def test_bad_assignments_are_one_error(item, words):
    with pytest.raises(DaLifError) as e:
        hardware(assignments=[item])
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content,words", [
    ("[1, 2]", "must be a JSON object"),
    ('{"neurons": 3}', "unknown hardware figure(s) neurons; known: name, "),
    ('{"neurons_per_core": "4096"}', "neurons_per_core: must be an integer"),
    ("{", "unreadable hardware figures"),
])
def test_bad_files_are_one_error(tmp_path, content, words):
    f = tmp_path / "hw.json"
    f.write_text(content)
    with pytest.raises(DaLifError, match=None) as e:
        hardware(f)
    assert words in str(e.value)


def _dense() -> FixedProgram:
    """input (4,) -dense 3x4-> h (3,) -dense 2x3-> readout (2,); T = 4."""
    w_in, w_out = np.array([[1, 2, 0, 3], [0, 0, 4, 0], [5, 0, 0, 0]]), np.ones((2, 3), int)
    pops = [Population("h", (3,), dv=np.array([100]), vth=10, bias_mant=np.zeros(3, int)),
            Population("ro", (2,), dv=np.array([0]), vth=2**17 - 1,
                       bias_mant=np.zeros(2, int))]
    syns = [Synapse("in", "input", "h", "dense", w_in, graded=True, input_shape=(4,),
                    output_shape=(3,)),
            Synapse("out", "h", "ro", "dense", w_out, input_shape=(3,), output_shape=(2,))]
    return FixedProgram(InputEncoding("analog", (4,), scale=10.0), pops, syns,
                        Readout("ro", 1.0), timesteps=4)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_inspect_takes_hardware_overrides_and_records_them(tmp_path, capsys):
    path = tmp_path / "p.fxp"
    save_program(_dense(), path)
    assert main(["inspect", str(path), "--json", "--hw", "neurons_per_core=2"]) == 0
    res = json.loads(capsys.readouterr().out)["resources"]
    h = {r["population"]: r for r in res["populations"]}["h"]
    # 3 neurons over 2 per core: 2 cores, and the neuron limit binds
    assert (h["cores"], h["binding_limit"], res["cores"]) == (2, "neurons", 3)
    assert res["hardware_overrides"] == {"neurons_per_core": 2}
    assert main(["inspect", str(path), "--hw", "neurons_per_cor=2"]) == 2
    assert "known: name, cores_per_chip" in _err(capsys)
    assert main(["inspect", str(CKPT), "--hw", "neurons_per_core=2"]) == 2
    assert "fixed-point program" in _err(capsys)


def test_simulate_emulator_takes_a_file_and_assignments(tmp_path, capsys):
    path, f = tmp_path / "p.fxp", tmp_path / "hw.json"
    save_program(_dense(), path)
    f.write_text(json.dumps({"energy_synop_pj": 1.0}))
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((3, 4), np.float32), y=np.zeros(3, np.int64),
             encoding=np.array("analog"))
    assert main(["simulate", str(path), "--backend", "emulator", "--dataset", str(data),
                 "--hardware", str(f), "--hw", "energy_synop_pj=2", "--hw",
                 "energy_spike_message_pj=0", "--json", "-", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["resources"]["hardware_overrides"] == {"energy_synop_pj": 2.0,
                                                    "energy_spike_message_pj": 0.0}
    # the synaptic energy is SynOps x the figure given
    assert r["energy"]["loihi"]["synaptic"] == pytest.approx(r["activity"]["synops"] * 2e-3)
    assert r["energy"]["loihi"]["messages"] == 0
    assert main(["simulate", str(path), "--backend", "emulator", "--dataset", str(data),
                 "--hw", "energy_synop_pj=x"]) == 2
    assert "takes a number" in _err(capsys)
    assert main(["simulate", str(CKPT), "--backend", "torch", "--hw", "energy_ac_pj=1"]) == 2
    assert "only to emulator" in _err(capsys)


def test_verify_records_the_overrides_and_uses_them(tmp_path, capsys):
    path = tmp_path / "p.fxp"
    save_program(_dense(), path)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((3, 4), np.float32), y=np.zeros(3, np.int64),
             encoding=np.array("analog"))
    out = tmp_path / "v.json"
    assert main(["verify", str(path), "--dataset", str(data), "--lava-samples", "0",
                 "--hw", "cores_per_chip=1", "--json", str(out), "--quiet"]) in (0, 1)
    r = json.loads(out.read_text())
    assert r["resources"]["hardware_overrides"] == {"cores_per_chip": 1}
    assert r["resources"]["chips"] == 2  # two cores, one per chip
    assert cost.resources(_dense())["chips"] == 1
    assert main(["verify", str(path), "--hw", "cores_per_chip=0"]) == 2
    assert "cores_per_chip: must be an integer in [1, " in _err(capsys)
