"""Build of fusedopt's one extension, fusedopt._C.

CPU kernels are always built (baseline, AVX2 and AVX-512 variants, chosen at run time).
CUDA kernels are built when nvcc and a CUDA build of torch are present, unless
FUSEDOPT_CPU_ONLY=1. CUDA architectures come from TORCH_CUDA_ARCH_LIST (default 9.0).
Build with `pip install --no-build-isolation .` so the installed torch is used.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """CUDA_HOME from the environment, or the root nvcc really belongs to (nvcc may be a wrapper)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True, timeout=60)
        m = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
        if m:
            return os.path.realpath(m.group(1))
    except Exception:  # noqa: BLE001 - fall back to the path of nvcc
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


_cuda_home = _find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home  # must be set before cpp_extension is imported

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

cpu_only = os.environ.get("FUSEDOPT_CPU_ONLY", "0") == "1"
with_cuda = (not cpu_only) and _cuda_home is not None and torch.version.cuda is not None
arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")
os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
os.environ.setdefault("MAX_JOBS", str(min(os.cpu_count() or 1, 4)))


def _has_openmp():
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(){return omp_get_max_threads()>0?0:1;}\n")
        r = subprocess.run([cxx, "-fopenmp", src, "-o", os.path.join(d, "t")], capture_output=True)
        return r.returncode == 0


openmp = os.environ.get("FUSEDOPT_NO_OPENMP", "0") != "1" and _has_openmp()

sources = sorted(glob.glob("csrc/torch/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
archs_str = ";".join(a.strip() for a in arch_list.replace(",", ";").split(";") if a.strip())

define_macros = [("FUSEDOPT_VERSION", f'"{VERSION}"')]
# -Wno-maybe-uninitialized: GCC 12 reports thousands of false "'__Y' may be used uninitialized" from inside
# its own AVX-512 intrinsic headers (masked loads, _mm512_undefined) once they are inlined into the kernels
cxx_flags = ["-O3", "-std=c++20", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas",
             "-Wno-maybe-uninitialized"]
cxx_flags += ["-fopenmp"] if openmp else ["-fopenmp-simd"]
link_flags = ["-fopenmp"] if openmp else []

if with_cuda:
    define_macros += [("FUSEDOPT_WITH_CUDA", None), ("FUSEDOPT_CUDA_ARCHS", f'"{archs_str}"')]
    nvcc_flags = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "--fmad=false", "-lineinfo"]  # no FMA contraction: bitwise as the CPU engine
    ext = CUDAExtension(
        "fusedopt._C",
        sources + cuda_sources,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_flags,
    )
else:
    ext = CppExtension(
        "fusedopt._C",
        sources,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )

built = ["cpu (scalar/avx2/avx512, runtime dispatch)" + (" + OpenMP" if openmp else ", no OpenMP")]
if with_cuda:
    built.append(f"cuda {torch.version.cuda} for archs {archs_str} ({len(cuda_sources)} .cu files)")
reason = (
    "FUSEDOPT_CPU_ONLY=1" if cpu_only else
    "nvcc not found" if _cuda_home is None else
    "torch is a CPU build" if torch.version.cuda is None else ""
)
msg = "fusedopt build: " + "; ".join(built) + (f"  [CUDA skipped: {reason}]" if reason else "")
print(msg, file=sys.stderr)

setup(
    name="fusedopt",
    version=VERSION,
    description="Fused multi-tensor optimizers for PyTorch (CPU and CUDA)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
)
