#!/usr/bin/env python3
"""Independent CORE scoring with PyTorch, for comparison with `n eval core`.

Reads a checkpoint written by nmoe (model.safetensors with nmoe's tensor names,
state.json with the config), rebuilds the model in float64 with the plain
PyTorch ops of torch_parity.py, builds prompts and spans with the standard
library implementation of make_core_prompt_fixture.py, and scores the first
--max-examples examples of each task one sequence at a time: multiple choice
and schema by the lowest mean NLL over the span (first on ties), language
modeling by greedy exact match. Writes per-task examples/correct/accuracy and
the per-example predictions as JSON.

Run on a machine with PyTorch (tiktoken too for GPT-2 checkpoints):
  python3 tests/reference/core_reference.py CHECKPOINT_STEP_DIR OUT.json \
      --tasks copa,openbook_qa,winograd,winogrande,lambada_openai --max-examples 200
"""
import argparse
import json
import math
import os
import random
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_core_prompt_fixture as prompts  # noqa: E402
from torch_parity import forward, read_safetensors  # noqa: E402


def hidden_states(tokens, p, biases, cfg):
    """Final-norm hidden states [T, D] of one token sequence."""
    return forward(torch.tensor([tokens]), p, biases, cfg)[0][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--tasks", default="")
    ap.add_argument("--max-examples", type=int, default=200)
    ap.add_argument("--bundle", default=os.path.join(HERE, "..", "..", "assets", "eval", "core"))
    a = ap.parse_args()

    state = json.load(open(os.path.join(a.checkpoint, "state.json")))
    cfg = json.loads(state["config_json"]) if isinstance(state.get("config_json"), str) else state["config"]
    arrays, _ = read_safetensors(os.path.join(a.checkpoint, "model.safetensors"))
    torch.set_default_dtype(torch.float64)
    p = {k: torch.tensor(v, dtype=torch.float64) for k, v in arrays.items() if not k.endswith("router.bias")}
    biases = {k: torch.tensor(v, dtype=torch.float64) for k, v in arrays.items() if k.endswith("router.bias")}
    max_len = cfg["seq_len"]
    if cfg["tokenizer"] == "bytes":
        encode, bos = (lambda s: list(s.encode("utf-8"))), 256
    else:
        import tiktoken
        enc = tiktoken.get_encoding(cfg["tokenizer"])
        encode, bos = enc.encode_ordinary, cfg["eos_token_id"]
    prompts.MAX_LEN = max_len
    prompts.BOS = bos
    prompts.tokenize = lambda s: [bos] + encode(s)

    yaml = prompts.parse_core_yaml(open(os.path.join(a.bundle, "core.yaml"), encoding="utf-8").read())
    specs = prompts.task_specs(yaml)
    wanted = [t for t in a.tasks.split(",") if t]
    results = {}
    with torch.no_grad():
        for task in specs:
            if wanted and task["label"] not in wanted:
                continue
            path = os.path.join(a.bundle, "eval_data", task["dataset_uri"])
            if not os.path.exists(path):
                continue
            data = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
            random.Random(1337).shuffle(data)
            if a.max_examples > 0:
                data = data[:a.max_examples]
            correct, preds = 0, []
            for idx in range(len(data)):
                shots = prompts.fewshot_of(len(data), idx, task["num_fewshot"])
                seqs, err = prompts.spans(task["type"], prompts.render(task, data, idx, shots))
                if err:
                    preds.append(None)
                    continue
                if task["type"] == "language_modeling":
                    toks, s, e = seqs[0]
                    h = hidden_states(toks, p, biases, cfg)
                    logits = h[s - 1:e - 1] @ p["lm_head.weight"].T
                    ok = bool((logits.argmax(-1) == torch.tensor(toks[s:e])).all())
                    correct += ok
                    preds.append(int(ok))
                else:
                    nll = []
                    for toks, s, e in seqs:
                        h = hidden_states(toks, p, biases, cfg)
                        logp = F.log_softmax(h[s - 1:e - 1] @ p["lm_head.weight"].T, dim=-1)
                        nll.append(-logp.gather(1, torch.tensor(toks[s:e])[:, None]).mean().item())
                    pick = nll.index(min(nll))
                    correct += pick == data[idx]["gold"]
                    preds.append(pick)
            results[task["label"]] = {"type": task["type"], "examples": len(data), "correct": correct,
                                      "accuracy": correct / len(data), "predictions": preds}
            print(f"{task['label']:34s} {correct:4d}/{len(data):4d}  acc {correct / len(data):.4f}", flush=True)
    json.dump({"checkpoint": os.path.basename(os.path.normpath(a.checkpoint)), "max_examples": a.max_examples,
               "torch": torch.__version__, "tasks": results}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
