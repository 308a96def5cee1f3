"""pyoptim.torch's compiled reader of torch grads (_torch_reader.cpp): built once per torch
version, at first use, against the headers of the torch installed, and cached.

Why: a CPU step of pyoptim.torch must check every ``p.grad`` (present, on the CPU, of its
param's dtype and size, laid out as its param (contiguous, or with a channels_last param's
strides), without a negative bit) and that no param's memory moved
before its kernels may read and write them by address. From Python that is one torch call per
tensor and attribute, about 55 ns each: some 100 us a step for a model of 200 small tensors, as
long as the kernels take on the whole of such a model. The reader does the same checks on the
tensors' C++ objects in a few us. It is the one part of pyoptim compiled against torch (whose C++
objects change from version to version), so it is built on the machine that runs it, as
DeepSpeed and torch.utils.cpp_extension build theirs, but without their dependencies (ninja,
setuptools): one compiler call, with the compiler that built pyoptim (``CXX``, else ``c++``).

Where it cannot be built or loaded (no compiler, no Python or torch headers), pyoptim.torch warns
once and reads the grads from Python, as fast as before it existed; the results are the same.
``PYOPTIM_TORCH_READER=0`` turns it off. The build goes to ``$PYOPTIM_CACHE_DIR`` (default
``$XDG_CACHE_HOME/pyoptim``, else ``~/.cache/pyoptim``), named after a hash of the source, the
torch build and the Python version, built by one process at a time (a lock file beside it;
data-parallel ranks that start together build once), written under a temporary name and
renamed, so that no process loads half a file. A build that no process has loaded for
KEEP_DAYS days (each pyoptim or torch version adds one of some 200 KB) is removed when another
is built."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # not POSIX: processes that start together each build a whole file
    fcntl = None

SOURCE = Path(__file__).with_name("_torch_reader.cpp")
ENV_SWITCH = "PYOPTIM_TORCH_READER"
PREFIX = "_torch_reader_"  # of every file a build makes in the cache
KEEP_DAYS = 30  # a build not loaded for this long is removed when another is built
_DAY = 86400.0
_UNTRIED = object()
_loaded = _UNTRIED  # the Reader type, or None where it is off or could not be built
_lock = threading.Lock()  # one build per process, whichever thread makes an optimizer first


def reader_type():
    """The compiled Reader type, building it at the first call of a process that lacks it; None
    where ``PYOPTIM_TORCH_READER=0`` or it cannot be built (warned once)."""
    global _loaded
    if _loaded is not _UNTRIED:
        return _loaded
    with _lock:
        if _loaded is not _UNTRIED:
            return _loaded
        if os.environ.get(ENV_SWITCH, "1") == "0":
            _loaded = None
        else:
            try:
                _loaded = _load().Reader
            except (OSError, ImportError, RuntimeError, subprocess.SubprocessError) as e:
                _loaded = None
                warnings.warn(
                    f"pyoptim.torch: its compiled reader of torch grads could not be built or "
                    f"loaded ({e}); steps read the grads from Python (the same results, some "
                    f"50 ns more per tensor and attribute). {ENV_SWITCH}=0 silences this.",
                    RuntimeWarning, stacklevel=4)
        return _loaded


def cache_dir() -> Path:
    if os.environ.get("PYOPTIM_CACHE_DIR"):
        return Path(os.environ["PYOPTIM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyoptim"


def module_name() -> str:
    """The module's name: a hash of what its binary depends on."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(),
                 str(torch.version.git_version).encode(), torch.__file__.encode(),
                 sys.version.encode(), sysconfig.get_config_var("EXT_SUFFIX").encode()):
        key.update(part)
        key.update(b"\0")
    return f"{PREFIX}{key.hexdigest()[:20]}"


def _load():
    name = module_name()
    path = cache_dir() / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # processes that start together (data-parallel ranks) build once: the first holds the
        # lock while it builds, the others then find the file
        with open(path.with_name(name + ".lock"), "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                _build(name, path)
                _prune(path.parent, name)
    else:
        try:  # in use: _prune keeps it
            if time.time() - path.stat().st_mtime > _DAY:
                os.utime(path)
        except OSError:  # a cache this process may not write
            pass
    spec = importlib.util.spec_from_file_location(
        name, path, loader=importlib.machinery.ExtensionFileLoader(name, str(path)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_command(name: str, output: Path) -> list[str]:
    torch_dir = Path(torch.__file__).parent
    lib = torch_dir / "lib"
    compiler = shlex.split(os.environ.get("CXX") or "c++")
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    # -O2, no fast-math or -march: this code reads tensors' metadata and does no math
    return [*compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-DPYOPTIM_MODULE={name}",
            "-I", str(torch_dir / "include"), "-I", sysconfig.get_paths()["include"],
            str(SOURCE), "-o", str(output),
            "-L", str(lib), "-lc10", "-ltorch_cpu", "-ltorch_python", f"-Wl,-rpath,{lib}"]


def _build(name: str, path: Path) -> None:
    print(f"pyoptim.torch: building its reader of torch grads for torch {torch.__version__} "
          f"(once, some 10-30 s) into {path.parent}", file=sys.stderr, flush=True)
    fd, temporary = tempfile.mkstemp(prefix=name, suffix=".tmp.so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(compile_command(name, Path(temporary)), capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the compiler exited with {done.returncode}: "
                               f"{done.stderr.strip()[-2000:]}")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _prune(directory: Path, keep: str) -> None:
    """Removes the files of other builds (binaries, lock files, what a killed build left) that
    have not been loaded or written for KEEP_DAYS days: builds for other pyoptim or torch
    versions, which a cache shared by several environments may still load (a load renews its
    build's time, once a day)."""
    cutoff = time.time() - KEEP_DAYS * _DAY
    for file in directory.glob(PREFIX + "*"):
        if file.name.startswith(keep):
            continue
        try:
            if file.stat().st_mtime < cutoff:
                file.unlink()
        except OSError:  # gone already (another process pruned it), or not ours to remove
            pass
