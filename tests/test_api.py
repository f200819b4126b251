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


def test_unknown_attribute_is_an_attribute_error():
    try:
        dalif_deploy.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
