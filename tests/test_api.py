"""The public API: every name in dalif_deploy.__all__ resolves, and importing it stays light."""

import subprocess
import sys

import dalif_deploy


def test_every_public_name_resolves():
    for name in dalif_deploy.__all__:
        assert getattr(dalif_deploy, name) is not None, name
    assert callable(dalif_deploy.verify_checkpoint) and callable(dalif_deploy.quantize_graph)


def test_import_and_public_names_do_not_import_lava_or_onnxruntime():
    code = ("import sys, dalif_deploy as d\n"
            "[getattr(d, n) for n in d.__all__]\n"
            "print(sorted(m for m in ('lava', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_subpackages_are_attributes_imported_on_first_use():
    """``import dalif_deploy; dalif_deploy.neurons`` works, as after ``import dalif_deploy.neurons``
    (the subpackage is imported when first reached, not by ``import dalif_deploy``)."""
    out = subprocess.run([sys.executable, "-c", "import sys, dalif_deploy\n"
                          "print('dalif_deploy.neurons' in sys.modules, "
                          "dalif_deploy.neurons.__name__, dalif_deploy.targets.__name__)"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert out.split() == ["False", "dalif_deploy.neurons", "dalif_deploy.targets"]


def test_unknown_attribute_is_an_attribute_error():
    try:
        dalif_deploy.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_program_file_loads_without_torch(tmp_path):
    """The .fxp format needs only numpy: with torch made unimportable, a saved program loads
    and round-trips (the emulator and Lava need nothing from the float world)."""
    import numpy as np

    from dalif_deploy.fixedpoint.fxp_format import save_program
    from dalif_deploy.fixedpoint.program import (
        FixedProgram,
        InputEncoding,
        Population,
        Readout,
        Synapse,
    )

    prog = FixedProgram(
        input=InputEncoding("events", (4,)),
        populations=[Population("a", (3,), [100], 10, np.zeros(3)),
                     Population("readout", (2,), [0], 2**17 - 1, np.zeros(2))],
        synapses=[Synapse("i", "input", "a", "dense", np.ones((3, 4)), input_shape=(4,),
                          output_shape=(3,)),
                  Synapse("o", "a", "readout", "dense", np.ones((2, 3)), input_shape=(3,),
                          output_shape=(2,))],
        readout=Readout("readout", 1.0), timesteps=2)
    save_program(prog, tmp_path / "p.fxp")
    code = ("import sys; sys.modules['torch'] = None\n"
            "import dalif_deploy as d\n"
            f"p = d.load_program({str(tmp_path / 'p.fxp')!r})\n"
            "print(p.timesteps, [q.name for q in p.populations], 'torch' in sys.modules and "
            "sys.modules['torch'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "['a',", "'readout']", "False"]


def test_public_names_point_at_the_module_that_defines_them():
    """Each lazy entry names the defining module (or its package), not a module that merely
    imports the name (``Hardware`` was exported through ``cost``)."""
    import inspect

    wrong = []
    for name, target in dalif_deploy._LAZY.items():
        module = target.split(":")[0]
        value = getattr(dalif_deploy, name)
        if ((inspect.isclass(value) or inspect.isfunction(value))
                and value.__module__ != module and not value.__module__.startswith(module + ".")):
            wrong.append(f"{name}: {target}, defined in {value.__module__}")
    assert not wrong, wrong
