#!/usr/bin/env bash
# The GPU check (issue 17), one command on a CUDA machine: see benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh [--smoke] [--steps a,b] [--budget-s S]
#
# Installs the wheels carried in benchmarks/.wheels (made by benchmarks/gpu_wheels.py where PyPI answers) into
# /tmp/gradbrain-site, puts it and workflow/ on PYTHONPATH, and runs benchmarks/gpu_check.py, writing into $OUT
# (default benchmarks/out/gpu_check): summary.json, the benchmarks' JSON, scores.tar.gz and gpu_check.log.
# Without CUDA it installs nothing, says so and exits 0. PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/out/gpu_check}"
WHEELS=benchmarks/.wheels
SITE=/tmp/gradbrain-site
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
cuda() { "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
if compgen -G "$WHEELS/*.whl" >/dev/null && [[ " $* " != *" --smoke "* ]] && cuda; then
    echo "gpu_check: installing $(ls $WHEELS/*.whl | wc -l) wheels from $WHEELS into $SITE" | tee -a "$LOG"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl 2>&1 | tee -a "$LOG"; then
        echo "gpu_check: installing the wheels failed (see above); remake them with benchmarks/gpu_wheels.py" | tee -a "$LOG"
        exit 1
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
"$PY" benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee -a "$LOG"
