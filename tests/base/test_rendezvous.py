"""Issue 29, sharding: inputs are checked before a rank joins its process group, the
rendezvous is bounded (a missing rank is an error naming it) and a signal ends it with the
CLI's one line, as at every other phase."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO_ROOT, default_signals

from dalif_deploy.base import parallel
from dalif_deploy.base.errors import DaLifError

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    env.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **extra)
    return env


@pytest.fixture
def launched(monkeypatch):
    def set_env(rank: int, port: int, seconds: str = "1") -> None:
        for k, v in _env(rank, port, DALIF_DEPLOY_RENDEZVOUS_TIMEOUT=seconds).items():
            monkeypatch.setenv(k, v)
        for k in [k for k in os.environ if k.startswith("TORCHELASTIC")]:
            monkeypatch.delenv(k)
    return set_env


def test_rank_0_names_the_ranks_that_never_came(launched):
    launched(0, _free_port())
    with pytest.raises(DaLifError, match=r"group of 2 did not form within 1 s: rank\(s\) 1 "
                                         r"never arrived at 127\.0\.0\.1:\d+"):
        parallel.start("cpu")
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_a_rank_whose_rank_0_never_comes_says_so(launched):
    launched(1, _free_port())
    with pytest.raises(DaLifError, match=r"rank 0's store at 127\.0\.0\.1:\d+ was not there "
                                         r"within 1 s"):
        parallel.start("cpu")


@pytest.mark.parametrize("value", ["0", "nan", "-5", "1e9", "soon"])
def test_the_rendezvous_timeout_is_checked(launched, value):
    launched(0, _free_port(), value)
    with pytest.raises(DaLifError, match="DALIF_DEPLOY_RENDEZVOUS_TIMEOUT"):
        parallel.start("cpu")


def _cli(*argv: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dalif_deploy", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def test_a_missing_input_is_reported_before_joining(tmp_path):
    """Alone as rank 0 of 2, with a --reference that does not exist: the missing file is the
    error, not a wait for rank 1 (the safety net's 300 s is far beyond the answer)."""
    port = _free_port()
    for argv in (["verify", str(CKPT), "--reference", str(tmp_path / "missing.pt")],
                 ["verify", str(CKPT), "--dataset", str(tmp_path / "missing.npz")],
                 ["simulate", str(CKPT), "--backend", "torch", "--dataset",
                  str(tmp_path / "missing.npz")],
                 ["verify", str(CKPT), "--data-dir", str(tmp_path / "nowhere")]):
        p = _cli(*argv, env=_env(0, port, DALIF_DEPLOY_RENDEZVOUS_TIMEOUT="300"))
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "missing" in err or "nowhere" in err


def _wait_listening(port: int, p: subprocess.Popen) -> None:
    """Until rank 0 hosts its store (it is then in the rendezvous)."""
    while p.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(p.communicate()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_rendezvous_is_one_line(tmp_path, sig):
    port = _free_port()
    p = _cli("verify", str(CKPT), "--json", str(tmp_path / "r.json"),
             env=_env(0, port, DALIF_DEPLOY_RENDEZVOUS_TIMEOUT="600"))
    _wait_listening(port, p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig, err
    assert err.splitlines() == [f"interrupted ({signal.Signals(sig).name})"], err
    assert list(tmp_path.iterdir()) == []
