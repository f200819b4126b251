"""Checkpoints: round trip, and every bad file fails with one clear line (CLI exit 2)."""

import os
import zipfile

import pytest
import torch

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.pickle_scan import declared_storages
from dalif_deploy.cli import main
from dalif_deploy.float_model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    content_digest,
    read_checkpoint,
    save_checkpoint,
)
from dalif_deploy.float_model.loading import load_checkpoint, load_model
from dalif_deploy.float_model.zoo import build_model, default_config, run_model

DATASET = {"name": "digits", "encoding": "analog", "input_shape": [1, 8, 8],
           "normalization": "x = pixel / 16"}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = default_config("digits-cnn", width=4, granularity="channel")
    model = build_model(cfg)
    with torch.no_grad():  # non-default values everywhere, so the round trip is meaningful
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.bn1.running_mean.add_(0.3)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, cfg, 3, DATASET, {"test_accuracy": 0.5}, seed=7)
    return path, model, cfg


def test_round_trip(saved):
    path, model, cfg = saved
    loaded, ckpt = load_model(path)
    assert not loaded.training
    assert ckpt.config == cfg and ckpt.timesteps == 3 and ckpt.dataset == DATASET
    assert ckpt.metrics == {"test_accuracy": 0.5} and ckpt.created["seed"] == 7
    ref = model.state_dict()
    assert ref.keys() == loaded.state_dict().keys()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(run_model(loaded, x, 3), run_model(model.eval(), x, 3))
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def _raw(path):
    return torch.load(path, weights_only=True)


def _resave(obj, path, fix_digest=True):
    if fix_digest and "content_sha256" in obj:
        obj["content_sha256"] = content_digest(obj)
    torch.save(obj, path)


def _flip_tensor_byte(src, dst):
    """Flip one byte inside the stored bytes of the largest tensor (zip CRC now wrong)."""
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(src.read_bytes())
    name_len = len(info.filename.encode())
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x40
    dst.write_bytes(bytes(raw))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # would create a directory if ever unpickled


def _make_bad(kind, src, dst):
    obj = _raw(src)
    if kind == "corrupted":
        _flip_tensor_byte(src, dst)
    elif kind == "truncated":
        dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif kind == "garbage":
        dst.write_bytes(b"not a checkpoint at all\n" * 10)
    elif kind == "wrong-version":
        obj["version"] = CHECKPOINT_VERSION + 1
        _resave(obj, dst)
    elif kind == "wrong-format":
        obj["format"] = "something-else"
        _resave(obj, dst)
    elif kind == "unknown-model":
        obj["model"]["name"] = "alexnet"
        _resave(obj, dst)
    elif kind == "missing-key":
        del obj["metrics"]
        _resave(obj, dst)
    elif kind == "missing-weight":
        del obj["state_dict"]["conv1.weight"]
        _resave(obj, dst)
    elif kind == "wrong-shape":
        obj["state_dict"]["fc.weight"] = obj["state_dict"]["fc.weight"][:, :-1].clone()
        _resave(obj, dst)
    elif kind in ("nan", "inf"):
        obj["state_dict"]["conv2.weight"][0, 0, 0, 0] = float(kind)
        _resave(obj, dst)
    elif kind == "edited-content":  # a changed weight with the old content_sha256
        obj["state_dict"]["fc.bias"][0] += 1.0
        _resave(obj, dst, fix_digest=False)
    elif kind == "bad-timesteps":
        obj["timesteps"] = 0
        _resave(obj, dst)
    elif kind == "pickle-payload":
        obj["metrics"] = {"test_accuracy": _Payload(str(dst.parent / "pwned"))}
        torch.save(obj, dst)
    else:  # pragma: no cover
        raise AssertionError(kind)


BAD = {  # kind -> a word the one-line message must contain
    "corrupted": "corrupted",
    "truncated": "truncated",
    "garbage": "not a readable checkpoint",
    "wrong-version": "version",
    "wrong-format": "not a dalif-deploy checkpoint",
    "unknown-model": "unknown model 'alexnet'",
    "missing-key": "missing ['metrics']",
    "missing-weight": "conv1.weight",
    "wrong-shape": "do not fit",
    "nan": "NaN or Inf",
    "inf": "NaN or Inf",
    "edited-content": "content_sha256",
    "bad-timesteps": "timesteps",
    "pickle-payload": "refusing to load",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_file_is_one_clear_line_and_exit_2(kind, saved, capsys):
    src = saved[0]
    dst = src.parent / f"{kind}.pt"
    _make_bad(kind, src, dst)
    with pytest.raises(DaLifError, match=BAD[kind].replace("[", r"\[").replace("]", r"\]")):
        load_model(dst)
    capsys.readouterr()
    assert main(["inspect", str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and BAD[kind] in err
    assert not (dst.parent / "pwned").exists()  # the payload never ran


def test_plain_state_dict_needs_a_model_name(saved, tmp_path):
    path, model, _ = saved
    sd = tmp_path / "sd.pt"
    torch.save(build_model(default_config("digits-cnn")).state_dict(), sd)
    with pytest.raises(DaLifError, match="--model"):
        load_checkpoint(sd)
    net, ckpt = load_model(sd, model="digits-cnn", timesteps=2)
    assert ckpt.timesteps == 2 and ckpt.model_name == "digits-cnn"


def test_reading_a_plain_state_dict_is_apart_from_fitting_it(tmp_path):
    """read_checkpoint (the format) reads a plain state_dict without building a model;
    load_checkpoint and load_model (loading) check its weights fit the named model."""
    sd = tmp_path / "sd.pt"
    weights = build_model(default_config("digits-cnn")).state_dict()
    del weights["fc.bias"]
    torch.save(weights, sd)
    ckpt = read_checkpoint(sd, model="digits-cnn")
    assert ckpt.plain_state_dict and ckpt.timesteps == 4 and "fc.bias" not in ckpt.state_dict
    for load in (load_checkpoint, load_model):
        with pytest.raises(DaLifError, match=r"weights do not fit .*missing \['fc.bias'\]"):
            load(sd, model="digits-cnn")


def test_declared_storages_are_read_without_running_anything():
    """The pickle scanner finds every storage a torch file declares, with its byte size, and
    imports nothing: a global the scanner meets is a stand-in, never the real object."""
    import io
    import pickle

    buf = io.BytesIO()
    torch.save({"a": torch.zeros(3, 5), "b": torch.zeros(7, dtype=torch.int64)}, buf)
    with zipfile.ZipFile(buf) as z:
        (pkl,) = [n for n in z.namelist() if n.endswith("data.pkl")]
        assert sorted(declared_storages(z.read(pkl))) == [("0", 60), ("1", 56)]
    payload = pickle.dumps(os.system)  # a pickle that would look up os.system
    assert declared_storages(payload) == []


def test_missing_file(tmp_path):
    with pytest.raises(DaLifError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_format_constants_are_what_the_docs_say():
    assert (CHECKPOINT_FORMAT, CHECKPOINT_VERSION) == ("dalif-deploy.checkpoint", 1)


def test_timesteps_contradicting_a_checkpoint_is_refused(saved, tmp_path):
    """-T is for plain state_dicts (like --model): a full checkpoint records its T. A different
    -T was honoured by the NIR export but ignored by the ONNX one, so `export -o --onnx -T`
    wrote two files with different T; now it is refused, and the recorded T is accepted."""
    path, _, _ = saved  # T = 3
    with pytest.raises(DaLifError, match="T=3"):
        load_checkpoint(path, timesteps=5)
    assert load_checkpoint(path, timesteps=3).timesteps == 3
    assert main(["export", str(path), "-o", str(tmp_path / "m.nir"), "-T", "5"]) == 2
    assert not (tmp_path / "m.nir").exists()
