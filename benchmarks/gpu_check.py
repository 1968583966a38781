"""The GPU check (issue 17): the CUDA tests, the default workflow on CUDA against the CPU, and the benchmarks.

Run once on a CUDA machine by ``benchmarks/gpu_check.sh``, which installs the carried wheels first (README.md
beside this file). The steps run in this order, each in a child process under its own time limit, and together
inside ``--budget-s``; a step whose estimate no longer fits in what is left is skipped and says so:

1. ``pytest``: ``pytest -m gpu tests/gpu``, while ``workflow_cpu`` runs the default workflow on the CPU beside it;
2. ``workflow_cuda``: the same workflow again with ``extraction.device`` and ``encoding.device`` set to cuda (the
   trained models, simulated studies and brain stores are reused; extraction, encoding and the hierarchy rerun),
   then ``compare_scores.py`` on the two runs' hierarchy tables;
3. ``extract`` (``extract.py --compile``), ``encode`` (``encode.py`` at n=9,000, p=1,024, t=15,000 beside
   scikit-learn and himalaya torch_cuda), ``encode_meg`` (one THINGS-MEG-sized fit, 22,248 x 76,151), ``joint``
   (``joint.py``: the joint fits and the test of gradient-specific signal of one THINGS-MEG subject at 30 Hz, 24
   ViT-L layers, on CUDA, and against the CPU float64 solver on a subsample; over 220 s on an H200 on 2026-12-04),
   ``decode`` (``decode.py``, the loader in the GPU mode), ``encode_scale`` (``encode_scale.py --scale meg``).

``summary.json`` (machine, versions, each step's status and seconds, the test outcomes, the workflow comparison
and each benchmark's JSON under ``results``) is rewritten after every step, so a run stopped from outside still
leaves the finished steps in ``--out``; with the log and ``scores.tar.gz`` that is three files (the GPU machine
returns at most eight). Without CUDA it prints why and exits 0; ``--smoke`` runs every step on the CPU at
tiny sizes instead (the dry run). ``--steps`` runs a subset (e.g. a second call for the steps that were skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
STEPS = [
    "pytest",
    "workflow_cpu",
    "workflow_cuda",
    "extract",
    "encode",
    "encode_meg",
    "joint",
    "decode",
    "encode_scale",
]
NEEDS = {  # modules a step imports; a step whose modules are missing is skipped, naming them
    "pytest": ["pytest", "zarr", "timm", "open_clip"],
    "workflow_cpu": ["snakemake", "zarr", "mne", "nibabel", "boto3", "jsonschema", "timm"],
    "extract": ["zarr", "timm"],
    "encode": ["sklearn", "himalaya"],
    "encode_meg": ["sklearn"],
    "joint": ["scipy"],
    "decode": ["zarr", "h5py", "mne"],
    "encode_scale": ["zarr"],
}
NEEDS["workflow_cuda"] = NEEDS["workflow_cpu"]
# (estimated seconds, limit in seconds) on an H100/H200 with 16 cores; the estimate decides whether a step starts
COST = {"pytest": (120, 300), "workflow_cpu": (150, 300), "workflow_cuda": (70, 200), "extract": (90, 200),
        "joint": (240, 300), "encode": (80, 180), "encode_meg": (45, 150), "decode": (45, 120),
        "encode_scale": (150, 200)}  # fmt: skip


class Check:
    """The run's state: where it writes, what it has found, how much time is left."""

    def __init__(self, args: argparse.Namespace):
        self.out, self.smoke, self.steps = args.out, args.smoke, args.steps
        self.work = args.work
        self.deadline = time.monotonic() + args.budget_s
        self.python = sys.executable
        self.summary: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                                        "smoke": self.smoke, "budget_s": args.budget_s, "steps": {}}  # fmt: skip

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=1, default=str))
        tmp.replace(self.out / "summary.json")

    def record(self, step: str, **fields: Any) -> None:
        self.summary["steps"].setdefault(step, {}).update(fields)
        self.save()
        shown = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "tail")
        print(f"== {step}: {shown}", flush=True)

    def can_start(self, step: str) -> bool:
        """Whether ``step`` was asked for, has its modules and fits in the time left (recording why not)."""
        if step not in self.steps:
            return False
        missing = [m for m in NEEDS.get(step, []) if importlib.util.find_spec(m) is None]
        if missing:
            self.record(step, status="skipped", reason=f"modules missing: {missing} (carry benchmarks/.wheels)")
            return False
        estimate = COST[step][0] / (3 if self.smoke else 1)
        if self.left() < estimate and not self.smoke:
            self.record(step, status="skipped", reason=f"{self.left():.0f} s left, the step needs about {estimate} s")
            return False
        return True

    def start(self, step: str, cmd: list[str], env: dict | None = None, echo: bool = True) -> tuple:
        """Start a step's child process; its output goes to the step's log and (``echo``) to this one's, live."""
        log = self.work / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.record(step, status="running", command=" ".join(cmd))
        env = {**os.environ, **(env or {})}
        out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "errors": "replace"}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, **out)

        def copy() -> None:
            with log.open("w") as f:
                for line in proc.stdout:
                    f.write(line)
                    if echo:
                        sys.stdout.write(line)
                        sys.stdout.flush()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        return proc, time.monotonic(), log, reader

    def finish(self, step: str, started: tuple) -> int:
        """Wait for a started step within its limit and the budget; record its status, seconds and log tail."""
        proc, t0, log, reader = started
        timeout = None if self.smoke else max(min(COST[step][1] - (time.monotonic() - t0), self.left()), 1.0)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -9
        reader.join(timeout=10)
        text = log.read_text(errors="replace")
        status = "ok" if rc == 0 else ("timeout" if rc == -9 else "failed")
        self.record(step, status=status, rc=rc, seconds=round(time.monotonic() - t0, 1), tail=text[-1500:])
        return rc

    def run(self, step: str, cmd: list[str], env: dict | None = None) -> int:
        return self.finish(step, self.start(step, cmd, env))


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpu_count": os.cpu_count(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "device": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
        }
        smi = shutil.which("nvidia-smi")
        if smi:
            query = "--query-gpu=name,driver_version,clocks.max.sm,power.limit"
            q = subprocess.run([smi, query, "--format=csv,noheader"], capture_output=True, text=True)
            env["nvidia_smi"] = q.stdout.strip()
    versions = {}
    for name in ("numpy", "scipy", "sklearn", "timm", "open_clip", "zarr", "himalaya", "snakemake", "mne", "triton"):
        try:
            versions[name] = getattr(__import__(name), "__version__", "?")
        except ImportError:
            versions[name] = None
    env["versions"] = versions
    return env


CUDA_OVERLAY = {"extraction": {"device": "cuda"}, "encoding": {"device": "cuda"}}
SMOKE_OVERLAY = {"extraction": {"batch_size": 50}}  # the smoke run's second run: another batch size, same numbers


def workflow_config(check: Check, overlay: dict | None = None) -> Path:
    """config/config.yaml writing under the work folder, with ``overlay``'s keys replaced (the smoke run: a smaller
    study, as the end-to-end test's)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    root = check.work / "workflow"
    cfg["results"] = str(root / "results")
    sim = cfg["simulation"]
    old_root, sim["root"] = sim["root"], str(root / "data" / "sim")
    for ds in cfg["datasets"].values():
        for key in ("root", "images_root"):
            if key in ds:
                ds[key] = ds[key].replace(old_root, sim["root"])
    if check.smoke:  # the end-to-end test's sizes (3 x 1000 trials fill whole sessions of 750)
        sim["fmri"].update(n_images=1000, n_subjects=1)
        sim["meg"].update(n_images=1000, n_subjects=1, n_test_images=4, n_catch=10)
        cfg["demo_training"].update(n_images=600, epochs=1)
        cfg["hierarchy"].update(permutations=50, bootstraps=10)
        for ds in cfg["datasets"].values():
            ds["subjects"] = [1]
    for section, values in (overlay or {}).items():
        cfg[section].update(values)
    path = root / ("config_overlay.yaml" if overlay else "config.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(check: Check, configfile: Path) -> list[str]:
    """The workflow up to the hierarchy tables of ``configfile``'s results folder."""
    target = Path(yaml.safe_load(configfile.read_text())["results"]) / "hierarchy" / "scores.csv"
    cores = str(os.cpu_count() or 2)
    return [check.python, "-m", "snakemake", str(target), "--snakefile", str(REPO / "Snakefile"), "--directory",
            str(REPO), "--configfile", str(configfile), "--workflow-profile", "none", "--cores", cores, "--scheduler",
            "greedy", "--rerun-incomplete"]  # fmt: skip


def job_counts(log: Path) -> dict[str, int]:
    """Snakemake's 'Job stats' table of a run: jobs per rule (what reran)."""
    lines, counts = log.read_text(errors="replace").splitlines(), {}
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
    return counts


def junit(path: Path) -> dict[str, Any]:
    """Outcome, seconds and message of every test in a JUnit XML report."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "")[:600]
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})  # fmt: skip
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {**counts, "tests": tests}


def benchmark_commands(check: Check) -> dict[str, list[str]]:
    py, b = check.python, "benchmarks/"
    if check.smoke:
        return {
            "extract": [py, b + "extract.py", "--arch", "vit_small_patch16_dinov3", "--size", "32", "--depth", "2",
                        "--n", "16", "--batch", "8", "--naive", "2", "--ref", "4", "--compile"],
            "encode": [py, b + "encode.py", "--n", "400", "--p", "32", "--t", "300", "--skip", "himalaya_numpy"],
            "encode_meg": [py, b + "encode.py", "--n", "500", "--p", "32", "--t", "700", "--skip", "numpy", "sklearn",
                           "himalaya"],
            "joint": [py, b + "joint.py", "--device", "cpu", "--n", "1500", "--sensors", "20", "--times", "10",
                      "--layers", "3", "--features", "64", "--control-components", "8", "--gradient-components", "8",
                      "--check-n", "600", "--check-t", "50", "--check-layers", "2"],
            "decode": [py, b + "decode.py", "--n", "128", "--batch", "16", "--workers", "0,2", "--modes",
                       "decode_only"],
            "encode_scale": [py, b + "encode_scale.py", "--images", "300", "--targets", "400", "--features", "16",
                             "--workdir", str(check.work / "encode_scale")],
        }  # fmt: skip
    return {
        "extract": [py, b + "extract.py", "--compile"],
        "encode": [py, b + "encode.py", "--skip", "numpy", "himalaya_numpy"],
        "encode_meg": [py, b + "encode.py", "--n", "22248", "--t", "76151", "--skip", "numpy", "sklearn", "himalaya",
                       "--generate", "cuda"],
        "joint": [py, b + "joint.py", "--device", "cuda"],
        # 8 batches per worker at 16 workers: the rate is the workers' steady state, not their first batches
        "decode": [py, b + "decode.py", "--n", "2048", "--batch", "16", "--workers", "4,8,16", "--modes",
                   "decode_only"],
        "encode_scale": [py, b + "encode_scale.py", "--scale", "meg", "--layers", "1", "--folds", "5", "--alphas",
                         "10", "--device", "cuda", "--workdir", str(check.work / "encode_scale")],
    }  # fmt: skip


def run_workflows(check: Check, cpu_run: tuple | None) -> None:
    """Wait for the CPU run, rerun on CUDA, compare the hierarchy tables and pack them for the way back."""
    configfile = check.work / "workflow" / "config.yaml"
    reference = check.work / "workflow" / "cpu_hierarchy"
    if cpu_run is None and not reference.exists():
        if "workflow_cuda" in check.steps:
            check.record("workflow_cuda", status="skipped", reason="no CPU run to compare with (step workflow_cpu)")
        return
    results = Path(yaml.safe_load(configfile.read_text())["results"]) / "hierarchy"
    if cpu_run is not None:
        rc = check.finish("workflow_cpu", cpu_run)
        print(cpu_run[2].read_text(errors="replace")[-3000:], flush=True)
        check.record("workflow_cpu", jobs=job_counts(cpu_run[2]))
        if rc != 0:
            return
        shutil.copytree(results, reference, dirs_exist_ok=True)
    if not reference.exists() or not check.can_start("workflow_cuda"):
        return
    overlay = SMOKE_OVERLAY if check.smoke else CUDA_OVERLAY
    started = check.start("workflow_cuda", snakemake(check, workflow_config(check, overlay)))
    if check.finish("workflow_cuda", started) != 0:
        return
    check.record("workflow_cuda", jobs=job_counts(started[2]), overlay=overlay)
    comparison = check.work / "compare.json"
    subprocess.run([check.python, str(REPO / "benchmarks" / "compare_scores.py"), str(reference), str(results),
                    "--out", str(comparison)], cwd=REPO)  # fmt: skip
    check.summary["workflow"] = json.loads(comparison.read_text())
    with tarfile.open(check.out / "scores.tar.gz", "w:gz") as tar:
        for name, folder in (("cpu", reference), ("cuda", results)):
            for table in ("scores.csv", "verdicts.csv", "tests.csv"):
                if (folder / table).exists():
                    tar.add(folder / table, arcname=f"{name}/{table}")
    check.save()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "gpu_check")
    p.add_argument("--work", type=Path, default=Path("/tmp/gradbrain-gpu-check"), help="scratch (workflow runs)")
    p.add_argument("--budget-s", type=float, default=400.0, help="no step starts that would end after this")
    p.add_argument("--smoke", action="store_true", help="every step on the CPU at tiny sizes (the dry run)")
    p.add_argument("--steps", type=lambda s: s.split(","), default=STEPS, help=f"comma-separated subset of {STEPS}")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check. "
              "Run it on a GPU machine, or with --smoke for the dry run on the CPU.")  # fmt: skip
        return 0
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        p.error(f"--steps: unknown {unknown}; choose from {STEPS}")
    check = Check(args)
    check.summary["environment"] = environment()
    check.save()
    device_env = {"GRADBRAIN_TEST_DEVICE": "cpu"} if args.smoke else {}
    cpu_run = None
    if check.can_start("workflow_cpu"):
        cpu_run = check.start("workflow_cpu", snakemake(check, workflow_config(check)), echo=False)
    if check.can_start("pytest"):
        junit_xml = check.work / "junit.xml"
        check.run("pytest", [check.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu",
                             f"--junitxml={junit_xml}", "-rfEs"], env=device_env)  # fmt: skip
        if junit_xml.exists():
            check.summary["pytest"] = junit(junit_xml)
            check.save()
    run_workflows(check, cpu_run)
    for step, cmd in benchmark_commands(check).items():
        if check.can_start(step):
            result = check.work / f"{step}.json"
            check.run(step, cmd + ["--out", str(result)])
            if result.exists():
                check.summary.setdefault("results", {})[step] = json.loads(result.read_text())
                check.save()
    check.summary["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    check.save()
    print(f"gpu_check: done; {args.out} holds summary.json and the benchmarks' JSON")
    for step, info in check.summary["steps"].items():
        print(f"{step:>14}: {info.get('status')} {info.get('seconds', '')} {info.get('reason', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
