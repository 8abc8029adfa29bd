#!/usr/bin/env python3
"""Writes tests/reference/fixtures/core_prompts.json for tests/test_core_prompt_fixture.cpp.

Usage: python3 tests/reference/make_core_prompt_fixture.py [OUT]
       (OUT defaults to tests/reference/fixtures/core_prompts.json)

An independent statement, in plain Python (standard library only), of how the
CORE eval of the DCLM / nanochat eval bundle builds its prompts and the token
spans it scores. It reads the bundle shipped in assets/eval/core and, for every
task whose JSONL file is present, records the first EXAMPLES examples of the
task's evaluation order:

  * task order: random.Random(1337).shuffle of the JSONL list, then the first
    MAX_EXAMPLES (20) examples;
  * few-shot examples of example idx: random.Random(1234 + idx).sample of the
    other indices of that truncated list (all the others, in order, when there
    are fewer than num_fewshot of them);
  * prompts: few-shot blocks each followed by "\\n\\n", then the example
    (multiple_choice: one per choice; schema: one per context option;
    language_modeling: [without continuation, stripped; with continuation]);
  * tokens: the byte tokenizer (UTF-8 bytes) with BOS = 256 first;
  * spans [start, end): multiple_choice after the choices' common token prefix,
    schema the options' common token suffix, language_modeling what "with" adds
    to "without"; sequences longer than MAX_LEN (256) are cropped on the left.

Written from the rules of the eval, not from nmoe's C++.
"""
import json
import os
import random
import sys

MAX_EXAMPLES = 20   # examples per task kept after the shuffle
EXAMPLES = 5        # examples per task recorded in the fixture
MAX_LEN = 256       # the model's sequence length: longer sequences are left-cropped
BOS = 256           # the byte tokenizer's BOS


# ---------------------------------------------------------------- core.yaml

def _unquote_double(s, where):
    """A YAML double-quoted scalar (s includes the quotes)."""
    assert s[0] == '"'
    out = []
    i = 1
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "/": "/", "0": "\0", "a": "\a",
              "b": "\b", "e": "\x1b", "f": "\f", "v": "\v", " ": " ", "N": "\x85", "_": "\xa0",
              "L": "\u2028", "P": "\u2029"}
    while True:
        if i >= len(s):
            raise ValueError(f"{where}: unterminated double-quoted value")
        c = s[i]
        if c == '"':
            rest = s[i + 1:].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"{where}: text after the closing quote")
            return "".join(out)
        if c == "\\":
            e = s[i + 1]
            if e in simple:
                out.append(simple[e])
                i += 2
            elif e in "xuU":
                n = {"x": 2, "u": 4, "U": 8}[e]
                out.append(chr(int(s[i + 2:i + 2 + n], 16)))
                i += 2 + n
            else:
                raise ValueError(f"{where}: unknown escape \\{e}")
        else:
            out.append(c)
            i += 1


def _scalar(v, where):
    v = v.strip()
    if v.startswith('"'):
        return _unquote_double(v, where)
    if v.startswith("'"):
        end = len(v) - 1
        if end < 1 or v[end] != "'":
            raise ValueError(f"{where}: unterminated single-quoted value")
        return v[1:end].replace("''", "'")
    if " #" in v:
        v = v[:v.index(" #")].rstrip()
    return v


def parse_core_yaml(text, name="core.yaml"):
    """The subset of YAML core.yaml uses: `icl_tasks:` then `-` items of `key: value` lines."""
    tasks = []
    seen_root = False
    for n, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{n}"
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not seen_root:
            if line.strip() != "icl_tasks:":
                raise ValueError(f"{where}: expected 'icl_tasks:'")
            seen_root = True
            continue
        body = line.strip()
        if body == "-" or body.startswith("- "):
            tasks.append({})
            body = body[1:].strip()
            if not body:
                continue
        if not tasks:
            raise ValueError(f"{where}: a field before the first '-'")
        if ":" not in body:
            raise ValueError(f"{where}: expected 'key: value'")
        key, value = body.split(":", 1)
        tasks[-1][key.strip()] = _scalar(value, where)
    return tasks


def task_specs(yaml_tasks):
    out = []
    for t in yaml_tasks:
        shots = t["num_fewshot"].strip()
        assert shots.startswith("[") and shots.endswith("]"), shots
        items = [s.strip() for s in shots[1:-1].split(",") if s.strip()]
        assert len(items) == 1, shots
        out.append({
            "label": t["label"],
            "dataset_uri": t["dataset_uri"],
            "type": t["icl_task_type"],
            "num_fewshot": int(items[0]),
            "delimiter": t.get("continuation_delimiter", " "),
        })
    return out


# ---------------------------------------------------------------- prompts and spans

def fewshot_of(n, idx, k):
    if k <= 0:
        return []
    others = [i for i in range(n) if i != idx]
    if len(others) < k:
        return others
    return random.Random(1234 + idx).sample(others, k)


def render(task, data, idx, shots):
    d = task["delimiter"]
    kind = task["type"]
    ex = data[idx]
    blocks = []
    for i in shots:
        f = data[i]
        if kind == "multiple_choice":
            blocks.append(f["query"] + d + f["choices"][f["gold"]])
        elif kind == "schema":
            blocks.append(f["context_options"][f["gold"]] + d + f["continuation"])
        else:
            blocks.append(f["context"].strip() + d + f["continuation"])
    head = "".join(b + "\n\n" for b in blocks)
    if kind == "multiple_choice":
        return [head + ex["query"] + d + c for c in ex["choices"]]
    if kind == "schema":
        return [head + c + d + ex["continuation"] for c in ex["context_options"]]
    base = head + ex["context"].strip() + d
    return [base.strip(), base + ex["continuation"]]


def tokenize(s):
    return [BOS] + list(s.encode("utf-8"))


def spans(kind, prompts):
    """Returns (list of [tokens, start, end], error or None)."""
    toks = [tokenize(p) for p in prompts]
    if kind == "language_modeling":
        without, with_ = toks
        if with_[:len(without)] != without:
            return [], "without is not a token prefix of with"
        seqs = [[with_, len(without), len(with_)]]
    elif kind == "multiple_choice":
        k = 0
        while all(k < len(t) for t in toks) and len({t[k] for t in toks}) == 1:
            k += 1
        seqs = [[t, k, len(t)] for t in toks]
    else:
        k = 0
        while all(k < len(t) for t in toks) and len({t[len(t) - 1 - k] for t in toks}) == 1:
            k += 1
        seqs = [[t, len(t) - k, len(t)] for t in toks]
    out = []
    for t, start, end in seqs:
        if len(t) > MAX_LEN:
            cut = len(t) - MAX_LEN
            t, start, end = t[cut:], start - cut, end - cut
            if start < 1:
                return [], "span longer than max_len"
        if start < 1 or start >= end:
            return [], "empty span"
        out.append([t, start, end])
    return out, None


# ---------------------------------------------------------------- output

def dump(v, indent=0):
    """JSON with one line per flat list or small object, so the file diffs well."""
    pad = " " * indent
    if isinstance(v, dict):
        if all(not isinstance(x, (dict, list)) for x in v.values()):
            return json.dumps(v)
        items = [f'{pad} {json.dumps(k)}: {dump(x, indent + 1)}' for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v):
            return json.dumps(v, separators=(",", ":")) if all(isinstance(x, int) for x in v) else json.dumps(v)
        items = [pad + " " + dump(x, indent + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(v)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bundle = os.path.join(root, "assets", "eval", "core")
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "reference", "fixtures",
                                                                  "core_prompts.json")
    with open(os.path.join(bundle, "core.yaml"), encoding="utf-8") as f:
        tasks = task_specs(parse_core_yaml(f.read()))
    doc = {
        "about": "CORE prompts and scored spans, made by tests/reference/make_core_prompt_fixture.py",
        "max_examples": MAX_EXAMPLES, "max_len": MAX_LEN, "bos": BOS,
        "missing": [],
        "tasks": [],
    }
    n_errors = 0
    for task in tasks:
        path = os.path.join(bundle, "eval_data", task["dataset_uri"])
        if not os.path.exists(path):
            doc["missing"].append(task["label"])
            continue
        with open(path, encoding="utf-8") as f:
            data = [json.loads(line) for line in f if line.strip()]
        random.Random(1337).shuffle(data)
        data = data[:MAX_EXAMPLES]
        examples = []
        for idx in range(min(EXAMPLES, len(data))):
            shots = fewshot_of(len(data), idx, task["num_fewshot"])
            prompts = render(task, data, idx, shots)
            seqs, error = spans(task["type"], prompts)
            n_errors += error is not None
            examples.append({
                "fewshot": shots,
                "gold": data[idx].get("gold") if task["type"] != "language_modeling" else None,
                "error": error is not None,
                "error_reason": error or "",
                "prompts": prompts,
                "seqs": [{"start": s, "end": e, "tokens": t} for t, s, e in seqs],
            })
        doc["tasks"].append({
            "label": task["label"], "type": task["type"], "num_fewshot": task["num_fewshot"],
            "delimiter": task["delimiter"], "n_data": len(data), "examples": examples,
        })
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(dump(doc) + "\n")
    print(f"{out_path}: {len(doc['tasks'])} tasks, {len(doc['missing'])} missing ({', '.join(doc['missing'])}), "
          f"{n_errors} unscorable examples, {os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
