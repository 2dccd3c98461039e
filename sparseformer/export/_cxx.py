"""Builds of the custom-op libraries (ONNX Runtime, ExecuTorch): one C++ source over the kernel
core, compiled by the C++ compiler (``$CXX``, default ``c++``) on first use and cached.

A library ``<stem>_<hash>.so`` goes to ``$<env_dir>/`` when that variable is set, else to
``$XDG_CACHE_HOME/sparseformer/<subdir>/`` (``~/.cache/sparseformer/<subdir>/``). ``<hash>`` covers
the sources (the front-end's C++ and headers and the kernel's), the flags (include and library
folders included) and the compiler's version: a changed source builds a new file, an unchanged
one is reused. The compiler writes to a temporary name that is then renamed, so a concurrent or
interrupted build never leaves a half library under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("sparseformer.export")

#: The kernel core's folder (core.h, tile_ops.h, threads.h).
KERNEL = Path(__file__).parent.parent / "kernels" / "cpu"
_KERNEL_HEADERS = (KERNEL / "core.h", KERNEL / "tile_ops.h", KERNEL / "threads.h")

# As the ATen build (kernels/cpu/build.py) less OpenMP's runtime: -fopenmp-simd (with SF_OPENMP_SIMD,
# which tile_ops.h reads, as -fopenmp-simd defines no macro) keeps the SIMD hints; threads are
# std::thread (threads.h). Hidden visibility: a library exports only what it marks.
BASE_FLAGS = (
    "-O3",
    "-std=c++17",
    "-fPIC",
    "-shared",
    "-pthread",
    "-fopenmp-simd",
    "-DSF_OPENMP_SIMD",
    "-fno-trapping-math",
    "-fvisibility=hidden",
)


class CxxLibrary:
    """One custom-op library: ``what`` names it in messages; ``flags()`` gives the extra compiler
    and linker arguments (called at build time, so a missing dependency is reported then);
    ``libs`` the libraries to link (``-l...``, placed after the source)."""

    def __init__(
        self,
        what: str,
        stem: str,
        source: Path,
        headers: Sequence[Path],
        env_dir: str,
        subdir: str,
        flags: Callable[[], list[str]] = list,
        libs: Sequence[str] = (),
    ) -> None:
        self.what, self.stem, self.source = what, stem, source
        self.headers = (*headers, *_KERNEL_HEADERS)
        self.env_dir, self.subdir, self.flags, self.libs = env_dir, subdir, flags, tuple(libs)
        self._lock = threading.Lock()
        self._built: Path | None = None

    def build_directory(self) -> Path:
        """The folder the library is built into."""
        root = os.environ.get(self.env_dir)
        if root:
            return Path(root)
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(cache) / "sparseformer" / self.subdir

    def _compiler(self) -> str:
        cxx = os.environ.get("CXX", "c++")
        if shutil.which(cxx) is None:
            raise RuntimeError(
                f"the {self.what} needs a C++ compiler: none found (looked for {cxx!r} on PATH; set CXX to use another)"
            )
        if sys.platform.startswith("win") or sys.platform == "darwin":
            raise RuntimeError(f"the {self.what} is built for Linux only, not {sys.platform}")
        return cxx

    def _digest(self, cxx: str, flags: list[str]) -> str:
        h = hashlib.sha256()
        for f in (self.source, *self.headers):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        h.update(" ".join(flags).encode())
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
        h.update(version.encode())
        return h.hexdigest()[:16]

    def path(self) -> Path:
        """The path of the built library (building it first when it is missing or out of date).

        Raises RuntimeError naming the cause when there is no compiler or the build fails.
        """
        with self._lock:
            if self._built is not None and self._built.is_file():
                return self._built
            cxx = self._compiler()
            flags = [*BASE_FLAGS, f"-I{KERNEL}", *self.flags()]
            folder = self.build_directory()
            target = folder / f"{self.stem}_{self._digest(cxx, [*flags, *self.libs])}.so"
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{target.name}.{os.getpid()}.tmp"
                cmd = [cxx, *flags, str(self.source), "-o", str(tmp), *self.libs]  # libraries after the source
                log.info("sparseformer: building the %s %s", self.what, target)
                t0 = time.perf_counter()
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        raise RuntimeError(f"building the {self.what} failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}")
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
                log.info("sparseformer: %s ready in %.1f s", self.what, time.perf_counter() - t0)
            self._built = target
            return target
