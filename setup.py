"""Build of fusedopt's one extension, fusedopt._C.

Two steps, both incremental (ninja):
  1. the torch-free engines, with CMake (CMakeLists.txt) into a build directory that is kept between
     runs (build/engines; FUSEDOPT_ENGINE_BUILD overrides):
     the CPU engine (scalar, AVX2 and AVX-512 variants, chosen at run time) and, when nvcc and a CUDA
     build of torch are present and FUSEDOPT_CPU_ONLY is not 1, the CUDA engine (TORCH_CUDA_ARCH_LIST,
     default 9.0); ctest runs in the same directory;
  2. the torch glue (csrc/torch/*.cpp), linked with the engines' static libraries into fusedopt/_C
     (an abi3 module: it uses CPython's limited API only).
Each step prints the compile time of every unit it compiled (tools/build_times.py).
Build with `python setup.py build_ext --inplace` (what run.sh does) or
`pip install --no-build-isolation .`, so the installed torch is used.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from setuptools import find_packages, setup

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import build_times  # noqa: E402


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
jobs = int(os.environ.get("MAX_JOBS", str(os.cpu_count() or 1)))
os.environ["MAX_JOBS"] = str(jobs)
archs = [a.strip() for a in arch_list.replace(",", ";").split(";") if a.strip()]
archs_str = ";".join(archs)
engine_dir = os.environ.get("FUSEDOPT_ENGINE_BUILD") or os.path.join(ROOT, "build", "engines")


def _cmake_archs():
    # "9.0" -> "90", "8.6+PTX" -> "86-real;86-virtual"
    out = []
    for a in archs:
        ptx = a.endswith("+PTX")
        n = a.replace("+PTX", "").replace(".", "")
        out += [f"{n}-real", f"{n}-virtual"] if ptx else [n]
    return ";".join(out)


def build_engines():
    """Configure (first time) and build the engines' static libraries; returns their paths."""
    # $CMAKE, else the cmake that configured this build folder (another version would reconfigure it
    # and rebuild everything), else the cmake beside this Python (a venv's), else the one on PATH
    cmake = os.environ.get("CMAKE")
    cache = os.path.join(engine_dir, "CMakeCache.txt")
    if not cmake and os.path.exists(cache):
        with open(cache) as f:
            m = re.search(r"^CMAKE_COMMAND:INTERNAL=(.+)$", f.read(), re.M)
        if m and os.path.exists(m.group(1).strip()):
            cmake = m.group(1).strip()
    here = os.path.join(os.path.dirname(sys.executable), "cmake")
    cmake = cmake or (here if os.path.exists(here) else shutil.which("cmake"))
    if cmake is None:
        raise RuntimeError("fusedopt: building needs cmake and ninja (pip install cmake ninja)")
    os.makedirs(engine_dir, exist_ok=True)
    # configured every time (a second or two; CMake regenerates only what changed), so switching
    # FUSEDOPT_CPU_ONLY or the archs reuses every object that did not change
    args = [cmake, "-S", ROOT, "-B", engine_dir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            f"-DFUSEDOPT_WITH_CUDA={'ON' if with_cuda else 'OFF'}"]
    if with_cuda:
        args += [f"-DCMAKE_CUDA_COMPILER={os.path.join(_cuda_home, 'bin', 'nvcc')}",
                 f"-DCMAKE_CUDA_ARCHITECTURES={_cmake_archs()}"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    targets = ["fusedopt_cpu"] + (["fusedopt_cuda"] if with_cuda else [])
    start = build_times.mark(engine_dir)
    t0 = time.time()
    subprocess.run([cmake, "--build", engine_dir, "-j", str(jobs), "--target", *targets], check=True)
    build_times.report(engine_dir, start, f"engines, {time.time() - t0:.0f} s wall with {jobs} jobs ({engine_dir})")
    libs = [os.path.join(engine_dir, "libfusedopt_cpu.a")]
    if with_cuda:
        libs.append(os.path.join(engine_dir, "libfusedopt_cuda.a"))
    return libs


def _has_openmp():
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(){return omp_get_max_threads()>0?0:1;}\n")
        r = subprocess.run([cxx, "-fopenmp", src, "-o", os.path.join(d, "t")], capture_output=True)
        return r.returncode == 0


openmp = os.environ.get("FUSEDOPT_NO_OPENMP", "0") != "1" and _has_openmp()
glue = sorted(glob.glob("csrc/torch/*.cpp"))

define_macros = [("FUSEDOPT_VERSION", f'"{VERSION}"')]
cxx_flags = ["-O3", "-std=c++20", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas"]
cxx_flags += ["-fopenmp"] if openmp else ["-fopenmp-simd"]
link_flags = ["-fopenmp"] if openmp else []
if with_cuda:
    define_macros += [("FUSEDOPT_WITH_CUDA", None), ("FUSEDOPT_CUDA_ARCHS", f'"{archs_str}"')]
    ext = CUDAExtension("fusedopt._C", glue, define_macros=define_macros, extra_compile_args={"cxx": cxx_flags},
                        extra_link_args=link_flags, py_limited_api=True)
else:
    ext = CppExtension("fusedopt._C", glue, define_macros=define_macros, extra_compile_args={"cxx": cxx_flags},
                       extra_link_args=link_flags, py_limited_api=True)


class Build(BuildExtension):
    def run(self):
        libs = build_engines()
        for e in self.extensions:
            e.extra_objects = list(libs)
            e.depends = list(e.depends) + list(libs)  # a rebuilt engine relinks the extension
        start = build_times.mark(self.build_temp)
        t0 = time.time()
        if self.inplace:  # an extension of another suffix (an older, non-abi3 build) would shadow this one
            for old in glob.glob(os.path.join(ROOT, "python", "fusedopt", "_C.*.so")):
                if not old.endswith(".abi3.so"):
                    os.remove(old)
        super().run()
        build_times.report(self.build_temp, start, f"torch glue, {time.time() - t0:.0f} s wall")


built = ["cpu (scalar/avx2/avx512, runtime dispatch)" + (" + OpenMP" if openmp else ", no OpenMP")]
if with_cuda:
    built.append(f"cuda {torch.version.cuda} for archs {archs_str}")
reason = (
    "FUSEDOPT_CPU_ONLY=1" if cpu_only else
    "nvcc not found" if _cuda_home is None else
    "torch is a CPU build" if torch.version.cuda is None else ""
)
print("fusedopt build: " + "; ".join(built) + (f"  [CUDA skipped: {reason}]" if reason else ""), file=sys.stderr)

setup(
    name="fusedopt",
    version=VERSION,
    description="Fused multi-tensor optimizers for PyTorch (CPU and CUDA)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[ext],
    cmdclass={"build_ext": Build.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
