"""Issue 29: the memory a plan may use is the least of what the machine has available, the
address-space limit (``ulimit -v``) and the memory cgroup's limit; each is read here from a
fake /proc and cgroup tree, so the figures are exact."""

from __future__ import annotations

import resource

import pytest

from dalif_deploy.base import resources
from dalif_deploy.base.errors import DaLifError

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A /proc with 8 GiB available and a process mapping 1 GiB; no RLIMIT_AS."""
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: {16 * GiB // 1024} kB\n"
                                  f"MemAvailable: {8 * GiB // 1024} kB\n")
    (proc / "self" / "status").write_text(f"Name: python\nVmSize: {GiB // 1024} kB\n")
    (proc / "self" / "cgroup").write_text("0::/\n")
    cg.mkdir()
    monkeypatch.setattr(resources, "PROC", str(proc))
    monkeypatch.setattr(resources, "CGROUP_ROOT", str(cg))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,
                                                               resource.RLIM_INFINITY))
    return proc, cg


def test_memavailable_alone(fake):
    assert resources.mem_available() == 8 * GiB


def test_the_address_space_limit_counts_less_what_is_mapped(fake, monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (
        (GiB + 300 * MiB, resource.RLIM_INFINITY) if which == resource.RLIMIT_AS
        else (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))
    assert resources.mem_available() == 300 * MiB
    with pytest.raises(DaLifError, match=r"needs about 1\.0 GiB .* more than the 300\.0 MiB.*"
                                         r"ulimit -v"):
        resources.check_memory(GiB, "the plan")


def test_a_cgroup_v2_limit_counts_less_its_usage(fake):
    proc, cg = fake
    (proc / "self" / "cgroup").write_text("0::/job/7\n")
    (cg / "job" / "7").mkdir(parents=True)
    (cg / "job" / "7" / "memory.max").write_text(f"{2 * GiB}\n")
    (cg / "job" / "7" / "memory.current").write_text(f"{GiB + 512 * MiB}\n")
    assert resources.mem_available() == 512 * MiB
    (cg / "job" / "7" / "memory.max").write_text("max\n")
    assert resources.mem_available() == 8 * GiB


def test_a_cgroup_v1_limit_counts_less_its_usage(fake):
    proc, cg = fake
    (proc / "self" / "cgroup").write_text("5:cpu:/\n4:memory:/docker/abc\n")
    (cg / "memory").mkdir()  # the group's own folder is not mounted here: the mount's files
    (cg / "memory" / "memory.limit_in_bytes").write_text(f"{3 * GiB}\n")
    (cg / "memory" / "memory.usage_in_bytes").write_text(f"{GiB}\n")
    assert resources.mem_available() == 2 * GiB
    (cg / "memory" / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # no limit
    assert resources.mem_available() == 8 * GiB


def test_check_memory_counts_our_freed_heap_only_when_short(monkeypatch):
    """The free heap this process holds is handed back (malloc_trim) and counted only when
    the plan would not fit otherwise: trimming costs page faults later, so a plan that fits
    never trims."""
    calls = []

    def avail(trim=False):
        calls.append(trim)
        return 2000 if trim else 1000

    monkeypatch.setattr(resources, "mem_available", avail)
    resources.check_memory(800, "a small plan")
    assert calls == [False]
    resources.check_memory(1500, "a plan our freed heap makes fit")
    assert calls == [False, False, True]
    with pytest.raises(DaLifError, match="a plan too large needs about"):
        resources.check_memory(1900, "a plan too large")


_FAULTS = """
import resource, sys, torch
from dalif_deploy.base.resources import reuse_freed_memory
took = reuse_freed_memory() if sys.argv[1] == "reuse" else None
torch.empty(64 << 18, dtype=torch.float32).fill_(1.0)  # 64 MiB, freed at once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(32 << 18, dtype=torch.float32).fill_(1.0)  # 32 MiB: 8,192 pages
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_after_a_free(mode: str) -> tuple[str, int]:
    import subprocess
    import sys

    took, faults = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True,
                                  text=True, check=True).stdout.split()
    return took, int(faults)


def test_reuse_freed_memory_keeps_a_freed_tensor_for_the_next():
    """After :func:`reuse_freed_memory` (the CLI calls it), a 32 MiB tensor allocated after a
    64 MiB one was freed takes the freed pages: almost no page faults, against one for each
    of its 8,192 pages with glibc's defaults (they map and unmap every block above 32 MB, a
    fault per page each time: half of verify's time at paper scale). Run in children: the
    setting is the process's.

    Why a smaller tensor: torch allocates with ``posix_memalign(64)``, and glibc 2.36's
    memalign asks for the size plus the alignment plus a minimum chunk, so a freed block of
    exactly the same size fits only when its neighbours are free too (measured: a 64 MiB
    tensor took its predecessor's pages in 13 of 24 processes). A smaller one always fits."""
    took, faults = _faults_after_a_free("reuse")
    if took != "True":
        pytest.skip("the C library has no glibc mallopt")
    assert faults < 1000, f"the 32 MiB tensor faulted {faults} pages in: the freed 64 MiB " \
        "block was handed back to the system"
    # and the test can fail: with glibc's defaults the same pattern faults every page
    assert _faults_after_a_free("defaults")[1] >= 8000
