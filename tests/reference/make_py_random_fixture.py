#!/usr/bin/env python3
"""Writes tests/reference/fixtures/py_random.json: outputs of CPython's
random.Random for tests/test_py_random.cpp, which checks nmoe::PyRandom
(src/eval/py_random.h) against them. Standard library only; CPython 3.8-3.13
give the same file.

    python3 tests/reference/make_py_random_fixture.py [OUT.json]
"""
import json
import math
import os
import random
import sys

SEEDS = [0, 1, 42, 1337] + [1234 + i for i in range(5)] + [2**32 - 1, 2**32, 2**40 + 5, 2**64 - 1]
GETRANDBITS_K = [1, 7, 31, 32, 33, 64]
RANDBELOW_N = [1, 2, 3, 5, 1000, 2**31 + 1, 2**32, 2**33 + 1, 2**64 - 1]
SHUFFLE_N = [0, 1, 2, 10, 100, 1000]
SAMPLE_NK = [(10, 3), (19, 10), (1000, 10), (22, 3), (5000, 3), (100, 0), (30, 30), (21, 21), (50, 6),
             (21, 3), (85, 10), (86, 10)]


def sample_branch(n, k):
    """Which branch of Random.sample (n, k) takes, computed as CPython does."""
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return "pool" if n <= setsize else "set"


def case(seed):
    r = random.Random(seed)
    words = [r.getrandbits(32) for _ in range(8)]

    r = random.Random(seed)  # k values interleaved on one stream
    getrandbits = [{"k": k, "values": [r.getrandbits(k) for _ in range(4)]} for k in GETRANDBITS_K]

    r = random.Random(seed)
    randbelow = [{"n": n, "values": [r._randbelow(n) for _ in range(5)]} for n in RANDBELOW_N]

    shuffle = []
    for n in SHUFFLE_N:
        x = list(range(n))
        random.Random(seed).shuffle(x)
        shuffle.append({"n": n, "result": x})

    sample = [{"n": n, "k": k, "branch": sample_branch(n, k), "result": random.Random(seed).sample(range(n), k)}
              for n, k in SAMPLE_NK]
    return {"seed": seed, "words": words, "getrandbits": getrandbits, "randbelow": randbelow,
            "shuffle": shuffle, "sample": sample}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "fixtures", "py_random.json")
    branches = {sample_branch(n, k) for n, k in SAMPLE_NK}
    assert branches == {"pool", "set"}, branches
    doc = {"python": sys.version.split()[0], "cases": [case(s) for s in SEEDS]}
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out} ({len(SEEDS)} seeds)")


if __name__ == "__main__":
    main()
