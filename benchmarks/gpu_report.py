"""The GPU check's JSON as a section of benchmarks/RESULTS.md, with the paper's whole study projected in GPU-hours.

    PYTHONPATH=workflow python benchmarks/gpu_report.py FOLDER [FOLDER ...] [--append benchmarks/RESULTS.md]

Each FOLDER holds what one call of ``gpu_check.sh`` wrote: summary.json, whose ``results`` hold each benchmark's
JSON by step (extract, joint, encode, encode_meg, decode, encode_scale; a folder may also hold them as files of
those names); a later folder (a second call for the steps the first skipped) adds its steps to the first's and
replaces the results it has. The section names the card
and the date, and gives the tests, the workflow comparison and every benchmark against its target.

Projection of a study (``--study``, default config/paper.yaml: 9 models, NSD 8 and THINGS-MEG 4 subjects), from
the sizes gradbrain.jobsize gives for its config:

    hours = [ sum_m images x F_m / (R x F_ref)
              + sum_m sum_d S_d x K x L_m x h_d x T_d x (n_d w_m t_d) / (n_b w_b t_b)
              + sum_m sum_d S_d x (K - 1) x J x (n_d L_m w_m t_d) / (n_j L_j w_j t_j) ] / 3600

- extraction: ``images`` = the stimuli of all datasets (``jobsize.images``), ``R`` the measured images/s of the
  benchmark model (DINOv3 ViT-L/16, 224 px, bf16), scaled to model m by forward FLOPs (``jobsize.model_cost``:
  F_m against F_ref of the benchmark model);
- encoding: per dataset d, ``S_d`` subjects x ``K`` kinds x ``L_m`` sampled layers fits; each costs the measured
  ``T_d`` seconds of one 5-fold fit at the benchmark's size (n_b images, w_b features, t_b targets; fMRI: encode.json,
  MEG: encode_meg.json), scaled by images x features x targets (the solver's GEMMs); ``h_d`` = 1 + 1/folds when the
  dataset has a held-out split (one more fit on the training set). Targets per subject are jobsize's: NSD's an
  upper bound of the ROI atlases' voxels (40,000 in func1pt8mm), THINGS-MEG's 271 sensors x the config's times.
- partition: per subject and kind compared with the activations, the measured ``J`` seconds of ``joint.py``'s
  whole partition (control space, control fit, the joint fits and partial F-tests of L_j layers of w_j features at
  n_j images and t_j targets), scaled by images x layers x features x targets (an upper bound where n_d < n_j: the
  F-test's residual Gram grows as n^2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from gradbrain import jobsize
from gradbrain.data.nsd.paths import COMPLETED_SESSIONS
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.models.catalogue import model_spec

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"extract_images_per_s": 1600.0, "ridge_seconds": 0.5, "study_gpu_hours": 1.0}
"""Issue 17's targets: extraction >= 1,600 images/s, ridge <= 0.5 s (n=9,000, p=1,024, t=15,000), study <= 1 h."""
BENCH_MODEL = {"catalogue": "dinov3_vitl16", "input_size": 224}


def load(*folders: Path) -> dict[str, Any]:
    """The JSON files of one or more calls, the later ones' files and steps over the earlier ones'."""
    out: dict[str, Any] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            data = json.loads(path.read_text())
            if path.stem == "summary":
                out.update(data.get("results", {}))
                if "summary" in out:
                    data = {**out["summary"], **data, "steps": {**out["summary"]["steps"], **data["steps"]}}
            out[path.stem] = data
    return out


def study_sizes(config: Path) -> dict[str, Any]:
    """Models (sampled layers, width, forward FLOPs) and datasets (subjects, images, targets) of a study config."""
    cfg = yaml.safe_load(config.read_text())
    kinds = len(cfg.get("extraction", {}).get("kinds", BASE_KINDS))
    folds = int(cfg.get("encoding", {}).get("folds", 5))
    models = {}
    for name, entry in cfg["models"].items():
        spec = model_spec(name, entry or {})
        layers, width = jobsize.feature_width(spec)
        models[name] = {"layers": layers, "width": width, "flops": jobsize.model_cost(spec)[1]}
    datasets = {}
    for name, ds in cfg["datasets"].items():
        ds = dict(ds)
        if ds["modality"] == "fmri":
            ds["sessions"] = {int(s): COMPLETED_SESSIONS[int(s)] for s in ds["subjects"]}
        datasets[name] = {
            "modality": ds["modality"],
            "subjects": {int(s): jobsize.images(ds, {}, int(s)) for s in ds["subjects"]},
            "images": jobsize.images(ds, {}, None),
            "targets": jobsize.targets(ds, {}),
            "heldout": 1 + 1 / folds if ds.get("heldout") else 1.0,
        }
    return {"models": models, "datasets": datasets, "kinds": kinds}


def _fit_benchmark(result: dict[str, Any] | None) -> dict[str, float] | None:
    """(n, p, t, seconds) of gradbrain's torch solver in an encode.py result."""
    if not result:
        return None
    cfg = result["config"]
    seconds = result["seconds"].get(f"gradbrain_torch_{cfg['device']}")
    return None if seconds is None else {"n": cfg["n"], "p": cfg["p"], "t": cfg["t"], "seconds": seconds}


def _joint_benchmark(result: dict[str, Any] | None) -> dict[str, float] | None:
    """(n, layers, p, t, seconds) of the whole partition in a joint.py result."""
    if not result or "full" not in result:
        return None
    size, sec = result["sizes"], result["full"]["seconds"]
    seconds = sum(sec.get(k, 0.0) for k in ("control_space", "control_fit", "joint_fit_total"))
    return {"n": size["n"], "layers": size["layers"], "p": size["features"], "t": size["targets"], "seconds": seconds}


def project(sizes: dict[str, Any], images_per_s: float, fits: dict[str, dict[str, float]],
            joint: dict[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """GPU-hours of a study (the formula in the module docstring); ``fits`` per modality (fmri, meg), ``joint`` the
    partition's benchmark (left out when None)."""
    ref = jobsize.model_cost(model_spec("bench", BENCH_MODEL))[1]
    images = sum(d["images"] for d in sizes["datasets"].values())
    extraction = sum(images * m["flops"] / (images_per_s * ref) for m in sizes["models"].values())
    encoding, partition, n_fits = 0.0, 0.0, 0
    for d in sizes["datasets"].values():
        bench = fits.get(d["modality"]) or next(iter(fits.values()))
        for m in sizes["models"].values():
            per_fit = [bench["seconds"] * n * m["width"] * d["targets"] / (bench["n"] * bench["p"] * bench["t"])
                       for n in d["subjects"].values()]  # fmt: skip
            encoding += sizes["kinds"] * m["layers"] * d["heldout"] * sum(per_fit)
            n_fits += sizes["kinds"] * m["layers"] * len(per_fit)
            if joint:
                scale = m["layers"] * m["width"] * d["targets"] / (joint["layers"] * joint["p"] * joint["t"])
                partition += (sizes["kinds"] - 1) * sum(joint["seconds"] * scale * n / joint["n"]
                                                        for n in d["subjects"].values())  # fmt: skip
    return {"images": images, "extraction_s": extraction, "encoding_s": encoding, "partition_s": partition,
            "fits": n_fits, "gpu_hours": (extraction + encoding + partition) / 3600}  # fmt: skip


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _header(summary: dict[str, Any]) -> list[str]:
    env = summary.get("environment", {})
    smoke = ", smoke run on the CPU" if summary.get("smoke") else ""
    lines = [
        f"## {summary.get('started', '?')[:10]}, GPU check on {env.get('device', 'no CUDA device')} "
        f"(`bash benchmarks/gpu_check.sh`{smoke})",
        "",
        f"{env.get('cpu_count')} cores; torch {env.get('torch')} (CUDA {env.get('cuda')}); nvidia-smi: "
        f"{env.get('nvidia_smi', '-')}; versions {env.get('versions', {})}.",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for step, info in summary.get("steps", {}).items():
        lines.append(f"| {step} | {info.get('status')} | {_f(info.get('seconds'))} | {info.get('reason', '')} |")
    tests = summary.get("pytest")
    if tests:
        lines += ["", f"### CUDA tests (`pytest -m gpu tests/gpu`): {tests['passed']} passed, {tests['failed']} "
                  f"failed, {tests['error']} errors, {tests['skipped']} skipped"]  # fmt: skip
        bad = [t for t in tests["tests"] if t["outcome"] in ("failed", "error")]
        lines += [f"- {t['outcome']}: `{t['test']}`: {t['message'][:300]}".replace("\n", " ") for t in bad]
    return lines


def _workflow(wf: dict[str, Any]) -> list[str]:
    v = wf.get("verdicts", {})
    lines = [
        "",
        "### Default workflow, extraction and encoding on CUDA, against the CPU run",
        f"{wf['rows']} scores in both runs; verdicts agree: {v.get('agree')} of {v.get('total')} (recovered "
        f"{v.get('recovered_a')} on the CPU, {v.get('recovered_b')} on CUDA); every metric within "
        f"{wf['tolerance']}: {'yes' if wf['agree'] else '**no**'}.",
        "",
        "| metric (the 12 largest differences) | rows | max abs diff | median |",
        "|---|---|---|---|",
    ]
    ranked = sorted(wf["metrics"].items(), key=lambda kv: -kv[1]["max_abs_diff"])
    for metric, m in ranked[:12]:
        lines.append(f"| {metric} | {m['rows']} | {m['max_abs_diff']:.2g} | {m['median_abs_diff']:.2g} |")
    equal = sum(m["max_abs_diff"] == 0 for _, m in ranked)
    return lines + ["", f"{equal} of {len(ranked)} metrics are equal in every row."]


def _extraction(ex: dict[str, Any]) -> list[str]:
    rate, comp = ex.get("batched_images_per_s"), ex.get("compiled_images_per_s")
    comp = comp if isinstance(comp, float) else None
    anchor = ex["arch"] == "vit_large_patch16_dinov3" and ex["size"] == 224 and ex["blocks"] == 24
    best = max(r for r in (rate, comp) if r)
    target = (f"Target >= 1,600 images/s: {_verdict(best >= TARGETS['extract_images_per_s'])} ({_f(best)})."
              if anchor else "Not the anchor's model and size: no target.")  # fmt: skip
    return [
        "",
        f"### Extraction (`extract.py --compile`): {ex['arch']}, {ex['size']} px, {ex['blocks']} blocks, "
        f"autocast {ex['autocast']}, {ex['objective']}, batch {ex['batch']}",
        "",
        "| path | images/s | roofline share | NSD 73k seconds | max rel. error vs fp32 |",
        "|---|---|---|---|---|",
        f"| eager | {_f(rate)} | {_f(ex.get('roofline_share'))} | {_f(ex.get('nsd_73k_seconds'))} | "
        f"{_f(ex.get('max_relative_error_vs_fp32'))} |",
        f"| compiled blocks | {_f(comp)} | {_f(ex.get('compiled_roofline_share'))} | "
        f"{_f(73000 / comp if comp else None)} | {_f(ex.get('compiled_max_relative_error_vs_fp32'))} |",
        f"| naive, one image | {_f(ex.get('naive_images_per_s'))} | | | |",
        "",
        f"bf16 GEMM {_f(ex.get('gemm_bf16_tflops'))} TFLOP/s, roofline {_f(ex.get('roofline_images_per_s'))} "
        f"images/s, peak memory {_f(ex.get('peak_memory_gb'))} GB. {target}",
    ]


def _ridge(enc: dict[str, Any] | None, meg: dict[str, float] | None, scale: dict[str, Any] | None) -> list[str]:
    lines = []
    if enc:
        c = enc["config"]
        lines += [
            "",
            f"### Ridge (`encode.py`, n={c['n']:,}, p={c['p']:,}, t={c['t']:,}, {c['folds']} folds x {c['alphas']} "
            "alphas, float32)",
            "",
            "| solver | seconds | vs scikit-learn | r max abs diff vs scikit-learn |",
            "|---|---|---|---|",
        ]
        for name, sec in enc["seconds"].items():
            agree = enc.get("agreement_vs_sklearn", {}).get(name, {})
            speedup = enc.get("speedup_vs_sklearn", {}).get(name)
            lines.append(f"| {name} | {_f(sec)} | {_f(speedup)} | {_f(agree.get('r_max_abs_diff'))} |")
        ours = enc["seconds"].get(f"gradbrain_torch_{c['device']}")
        if ours is not None and (c["n"], c["p"], c["t"]) == (9000, 1024, 15000):
            lines += ["", f"Target <= 0.5 s: {_verdict(ours <= TARGETS['ridge_seconds'])} ({_f(ours)} s)."]
    if meg:
        lines += ["", f"### One THINGS-MEG-sized fit (`encode.py --n {meg['n']} --t {meg['t']}`, p={meg['p']}, one "
                  f"layer): {_f(meg['seconds'])} s"]  # fmt: skip
    if scale:
        size = f"{scale['images']:,} x {scale['targets']:,}, {scale['layers']} layer(s) x 2 kinds"
        lines += ["", f"### `encode_scale.py --scale {scale['scale']}` ({size}, {scale['folds']} folds x "
                  f"{scale['alphas']} alphas, {scale['device']}): {_f(scale['seconds'])} s, peak host memory "
                  f"{_f(scale['peak_rss_gb'])} GB"]  # fmt: skip
    return lines


def _joint(res: dict[str, Any]) -> list[str]:
    size = res["sizes"]
    lines = ["", f"### The partition at one THINGS-MEG subject's size (`joint.py`, {res['device']}): "
             f"n={size['n']:,}, {size['targets']:,} targets, {size['layers']} layers x {size['features']:,} features, "
             f"control {size['control_components']} components per layer, {size['folds']} folds x "
             f"{size['alphas']} alphas"]  # fmt: skip
    full = res.get("full")
    if full:
        phases = ", ".join(f"{k} {_f(v)} s" for k, v in full["seconds"].items())
        lines += ["", f"{phases}; peak GPU memory {_f(full.get('peak_gpu_gb'))} GB, peak host memory "
                  f"{_f(res.get('peak_host_gb'))} GB."]  # fmt: skip
    check = res.get("check")
    if check:
        lines += ["", f"Against the numpy float64 solver on the CPU ({check['n']:,} images, {check['targets']} "
                  f"targets, {check['layers']} layers): joint R^2 max abs diff {_f(check['r2_joint_max_abs'])}, r "
                  f"{_f(check['r_joint_max_abs'])} (99th percentile {_f(check.get('r_joint_p99_abs'))}), F-test "
                  f"log10 p {_f(check['f_p_log10_max_abs'])}, layers' summed-test log10 p "
                  f"{_f(check['layer_p_log10_max_abs'])}; same significant layers: "
                  f"{check['same_significant_layers']}."]  # fmt: skip
    return lines


def _projection(ex: dict[str, Any], fits: dict[str, dict[str, float]], study: Path,
                joint: dict[str, float] | None) -> list[str]:  # fmt: skip
    sizes = study_sizes(study)
    name = study.relative_to(REPO) if study.is_relative_to(REPO) else study
    targets = ", ".join(f"{d}: {v['targets']:,}" for d, v in sizes["datasets"].items())
    lines = [
        "",
        f"### Projection of `{name}` ({len(sizes['models'])} models; targets per subject {targets})",
        "hours = [sum_m images x F_m / (R x F_ref) + sum_m sum_d S_d x K x L_m x h_d x T_d x (n_d w_m t_d) / "
        "(n_b w_b t_b) + partition] / 3600, each term in benchmarks/gpu_report.py's docstring"
        + ("" if joint else " (no partition benchmark: the partition is left out)"),
        "",
        "| extraction at | images | extraction h | fits | encoding h | partition h | GPU-hours | target <= 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in (("eager", ex.get("batched_images_per_s")), ("compiled blocks", ex.get("compiled_images_per_s"))):
        if isinstance(r, float) and r > 0:
            p = project(sizes, r, fits, joint)
            lines.append(
                f"| {label} ({_f(r)} images/s) | {p['images']:,} | {p['extraction_s'] / 3600:.3f} | {p['fits']:,} | "
                f"{p['encoding_s'] / 3600:.3f} | {p['partition_s'] / 3600:.3f} | {p['gpu_hours']:.2f} | "
                f"{_verdict(p['gpu_hours'] <= TARGETS['study_gpu_hours'])} |"
            )
    return lines


def section(res: dict[str, Any], study: Path) -> str:
    """The markdown section for RESULTS.md."""
    summary = res.get("summary", {})
    lines = _header(summary)
    if summary.get("workflow"):
        lines += _workflow(summary["workflow"])
    if res.get("extract"):
        lines += _extraction(res["extract"])
    dec = res.get("decode")
    if dec:
        lines += ["", f"### Image decoding (`decode.py`, {dec['n_images']} images, batches of {dec['batch']})", "",
                  "| source / mode / workers | images/s |", "|---|---|"]  # fmt: skip
        lines += [f"| {k} | {_f(v)} |" for k, v in dec["images_per_s"].items()]
    meg = _fit_benchmark(res.get("encode_meg"))
    lines += _ridge(res.get("encode"), meg, res.get("encode_scale"))
    if res.get("joint"):
        lines += _joint(res["joint"])
    fits = {k: v for k, v in (("fmri", _fit_benchmark(res.get("encode"))), ("meg", meg)) if v}
    if res.get("extract") and fits:
        lines += _projection(res["extract"], fits, study, _joint_benchmark(res.get("joint")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", type=Path, nargs="+", help="the files each call of gpu_check.sh wrote ($OUT)")
    p.add_argument("--study", type=Path, default=REPO / "config" / "paper.yaml", help="study config to project")
    p.add_argument("--append", type=Path, default=None, help="append the section to this file (RESULTS.md)")
    args = p.parse_args(argv)
    text = section(load(*args.folders), args.study.resolve())
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
