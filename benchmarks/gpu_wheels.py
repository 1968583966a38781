"""Download, where PyPI answers, the wheels that the lent GPU machine lacks, into benchmarks/.wheels (git-ignored).

    python benchmarks/gpu_wheels.py [--dest benchmarks/.wheels]

The GPU machine has no internet; its image holds PyTorch with CUDA and many packages (IMAGE, read off such a
machine on 2026-11-17) for Python 3.12 on x86-64. This takes pyproject.toml's pinned dependencies that the image
lacks (plus FORCE: timm at the project's pin, since the DINOv3 architectures need a recent one), follows their
requirements (markers evaluated for that machine) and downloads every wheel not in the image, built here from the
sdist when PyPI has no wheel (pure-Python packages). ``benchmarks/gpu_check.sh`` installs them there with
``pip install --no-deps --target``; carry the folder with the call (its size counts towards the 64 MiB that travel).
"""

from __future__ import annotations

import argparse
import email.parser
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]  # fmt: skip
TARGET_ENV = default_environment() | {"python_version": "3.12", "python_full_version": "3.12.3",
              "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}  # fmt: skip
IMAGE_LIST = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize huggingface-hub hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp"""
IMAGE = set(IMAGE_LIST.split())
FORCE = {"timm"}
SKIP = {
    "pulp": "snakemake's ILP scheduler only; gpu_check runs --scheduler greedy (16 MB)",
    "nilearn": "the report's surface maps only; gpu_check stops at the hierarchy tables (10 MB)",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fetch(req: str, dest: Path) -> Path:
    """One wheel for the GPU machine (``req`` as pip takes it), downloaded or built from the sdist."""
    before = set(dest.glob("*.whl"))
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    cmd = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
           "cp", *platforms, "-d", str(dest), req]  # fmt: skip
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), req], check=True, capture_output=True)
    new = set(dest.glob("*.whl")) - before
    name = norm(Requirement(req).name)
    return next(iter(new)) if new else next(w for w in dest.glob("*.whl") if norm(w.name.split("-")[0]) == name)


def requirements(wheel: Path) -> list[Requirement]:
    """A wheel's requirements that apply on the GPU machine (extras left out)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    reqs = [Requirement(r) for r in msg.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET_ENV)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=REPO / "benchmarks" / ".wheels")
    args = p.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    queue = [r for r in map(Requirement, project) if norm(r.name) not in IMAGE or norm(r.name) in FORCE]
    done: dict[str, Path] = {}
    while queue:
        req = queue.pop(0)
        name = norm(req.name)
        if name in done or name in SKIP or (name in IMAGE and name not in FORCE):
            continue
        done[name] = fetch(f"{req.name}{req.specifier}", args.dest)
        print(f"{done[name].name}", flush=True)
        queue += requirements(done[name])
    size = sum(w.stat().st_size for w in done.values())
    manifest = args.dest / "MANIFEST.txt"
    manifest.write_text("".join(f"{w.name}\n" for w in sorted(done.values())))
    print(f"{len(done)} wheels, {size / 2**20:.1f} MiB in {args.dest}; left out: {SKIP}")
    if size > 56 * 2**20:
        print("warning: over 56 MiB; with the repository that may pass the 64 MiB that travel with a call")


if __name__ == "__main__":
    main()
