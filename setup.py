"""Build the Cython kernels (core and coupled), with OpenMP where the compiler supports it.

Environment switches
--------------------
LTVSIM_CYTHON_DEBUG=1
    Build with Cython bounds and wraparound checks on (slow; for debugging).
LTVSIM_MARCH=<arch>
    Target of ``-march`` (default ``native``: the package is compiled on the machine
    that runs it, and the kernels' inner loops need AVX2 or better to vectorise). Set
    ``LTVSIM_MARCH=x86-64-v3`` (or ``none``) to build a wheel for other machines.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts(flags, openmp=True):
    """Return True if the C compiler builds and links a tiny program with ``flags``."""
    compiler = sysconfig.get_config_var("CC") or "cc"
    compiler = compiler.split()[0]
    if shutil.which(compiler) is None:
        compiler = "cc"
    if openmp:
        source = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    else:
        source = "int main(void) { return 0; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as handle:
            handle.write(source)
        try:
            result = subprocess.run(
                [compiler, src, "-o", os.path.join(tmp, "probe"), *flags],
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


# -ffp-contract=off: never fuse multiply-adds, so Cython and numba agree to the last bit.
# -fno-inline-*: gcc vectorises the kernels' per-path passes only while they stay
# functions of their own (inlined into the OpenMP region they are not vectorised).
compile_args = [
    "-O3",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-inline-small-functions",
    "-fno-inline-functions-called-once",
]
link_args = []
march = os.environ.get("LTVSIM_MARCH", "native")
if march and march != "none":
    if _compiler_accepts([f"-march={march}"], openmp=False):
        compile_args.append(f"-march={march}")
    else:
        warnings.warn(f"ltvsim: the C compiler rejects -march={march}; building without it", stacklevel=1)
if sys.platform != "win32" and _compiler_accepts(["-fopenmp"]):
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
else:
    warnings.warn(
        "ltvsim: the C compiler has no OpenMP support; the Cython backend will be "
        "built single-threaded (results are identical, only slower).",
        stacklevel=1,
    )

debug = os.environ.get("LTVSIM_CYTHON_DEBUG") == "1"
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
}

# The core kernel and the coupled kernel (cascades), with the same flags.
extensions = [
    Extension(
        f"ltvsim.backends.{name}",
        [f"src/ltvsim/backends/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in ("_cython_kernel", "_cython_coupled")
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
