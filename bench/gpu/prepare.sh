#!/usr/bin/env bash
# bench/gpu, step 0: run on a machine WITH network (any CPU, this repo's venv active), before the
# offline GPU run. It writes, all git-ignored:
#   bench/gpu/wheels/polars/  polars + its runtime (55 MB: carried by a command of its own)
#   bench/gpu/wheels/rest/    bitsandbytes (trimmed to the CPU + CUDA 13.x libraries), trl,
#                             datasets, lm-eval and the small packages they import (about 20 MB)
#   bench/gpu/prepared/cpu/   `kia demo` on this CPU: the facts, probe, build, adapter and audit
#                             the GPU run is compared with (its build is what the GPU trains on;
#                             the target lacks the sentence-embedding model a build needs)
# The versions are the ones this repo's CI tests. Wheels are for CPython $PY_VERSION (default
# 3.12, the GPU machine's) on manylinux x86_64.
set -euo pipefail
cd "$(dirname "$0")/../.."
G=bench/gpu
W=$G/wheels
PY=${PY_VERSION:-3.12}
rm -rf "$W" && mkdir -p "$W/polars" "$W/rest" "$W/sdist"

download() {  # download DIR SPEC...: binary wheels only, no dependencies (each is listed)
  local dir=$1; shift
  pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 \
    --platform any -d "$dir" "$@"
}

download "$W/polars" polars==2.1.0 polars-runtime-32==2.1.0
download "$W/rest" bitsandbytes==0.50.2 trl==1.16.0 datasets==5.2.0 lm_eval==0.4.13 evaluate==0.4.6 \
  dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 pytablewriter==1.2.1 DataProperty==1.1.1 \
  mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1 \
  more-itertools==11.2.1 nltk==3.10.4 sacrebleu==2.6.0 portalocker==4.4.2 tabulate==0.10.0 colorama==0.4.6 \
  absl-py==2.5.1
# three packages publish only an sdist: build their (pure-Python) wheels here
pip wheel --no-deps -w "$W/rest" word2number==1.1 sqlitedict==2.1.0 rouge_score==0.1.2

# bitsandbytes' wheel holds one library per CUDA version (43 MB): keep the CPU one and CUDA 13.x
python - "$W/rest" <<'EOF'
import base64, hashlib, sys, zipfile
from pathlib import Path

src = next(Path(sys.argv[1]).glob("bitsandbytes-*.whl"))
keep = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so")
tmp = src.with_suffix(".tmp")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    names = [n for n in zin.namelist() if not (Path(n).name.startswith("libbitsandbytes") and Path(n).name not in keep)]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    lines = []
    for n in names:
        if n == record:
            continue
        data = zin.read(n)
        zout.writestr(zin.getinfo(n), data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{n},sha256={digest},{len(data)}")
    zout.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")
tmp.replace(src)
print(f"{src.name}: {src.stat().st_size / 2**20:.1f} MB")
EOF
rm -rf "$W/sdist"
du -sh "$W/polars" "$W/rest"

# the CPU reference run (about 2-3 minutes on 2 cores); SKIP_DEMO=1 leaves it out
[ -n "${SKIP_DEMO:-}" ] && exit 0
python -m kia demo -o "$G/prepared/cpu" --overwrite
du -sh "$G/prepared"
echo "ready: see bench/README.md, 'GPU check', for the two commands to run on the GPU machine"
