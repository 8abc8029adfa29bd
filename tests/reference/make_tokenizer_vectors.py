#!/usr/bin/env python3
"""Reference token ids from OpenAI's tiktoken, for tests/test_tokenizer_vectors.cpp.

Builds tiktoken Encodings for gpt2, o200k_base and o200k_harmony FROM THE FILES
SHIPPED IN assets/tokenizers (nothing is downloaded): the ranks come from
tiktoken's own loaders (data_gym_to_mergeable_bpe_ranks over encoder.json and
vocab.bpe, load_tiktoken_bpe over o200k_base.tiktoken), and the pattern, special
tokens and vocabulary size from tiktoken_ext.openai_public's constructors, with
their loaders redirected to those ranks. Then encode_ordinary is run over

  edge         every text of tests/reference/tokenizer_edge_cases.txt (one per
               line, escapes decoded, invalid UTF-8 repaired with
               bytes.decode("utf-8", "replace"))
  fuzz         4000 random short texts mixing the characters the patterns treat
               specially (contractions, case, marks, numbers, every kind of
               whitespace, Unicode 15-17 letters) and random code points, plus
               long whitespace runs; written to tokenizer_fuzz_texts.json
  shakespeare  data/corpus/tinyshakespeare.txt, whole
  wiki         the enwiki_2015 validation text (--wiki, the .zst): its first
               ~300 KB (cut after a newline) stored id by id, and the whole text
               as an id count and the SHA-256 of its ids

and writes to --out:
  tokenizer_vectors.json            index: tokenizers, texts, ids per text, hashes
  tokenizer_fuzz_texts.json         the fuzz texts (a JSON list of strings)
  tokenizer_{gpt2,o200k_base}_{edge,fuzz,shakespeare,wiki}.u32   ids, uint32 little-endian
o200k_harmony must give o200k_base's ids (same ranks and pattern); the index
records its hashes and points at o200k_base's files.

  python3 tests/reference/make_tokenizer_vectors.py --out tests/reference/fixtures \\
      --wiki ../shared/data/corpus/enwiki_2015/enwiki_2015_wikiextractor.val.txt.zst [--bench]

(the .zst is read with the zstandard module or the zstd program, else from the
decompressed .txt beside it; --bench also prints tiktoken's one-thread MB/s).

--backend python swaps tiktoken for a pure-Python re-implementation (the
`regex` module and tiktoken's merge loop) for self-checks where tiktoken is not
installed; its fixtures are NOT the reference (its Unicode tables may differ).
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets" / "tokenizers"
GPT2_ENCODER = ASSETS / "gpt2" / "encoder.json"
GPT2_VOCAB = ASSETS / "gpt2" / "vocab.bpe"
O200K_FILE = ASSETS / "o200k_base" / "o200k_base.tiktoken"
GPT2_ENCODER_SHA = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_SHA = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
O200K_SHA = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
EDGE_FILE = REPO / "tests" / "reference" / "tokenizer_edge_cases.txt"
SHAKESPEARE_FILE = REPO / "data" / "corpus" / "tinyshakespeare.txt"
WIKI_PREFIX_BYTES = 300_000

# The patterns src/tokenizer/pretokenize.cpp implements (tiktoken 0.14's strings).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
EXPECTED = {  # name -> (pattern, n_vocab, eot)
    "gpt2": (GPT2_PAT, 50257, 50256),
    "o200k_base": (O200K_PAT, 200019, 199999),
    "o200k_harmony": (O200K_PAT, 201088, 199999),
}


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def ids_bytes(ids):
    return struct.pack(f"<{len(ids)}I", *ids)


# ---------------------------------------------------------------- texts

def unescape(line, where):
    """The edge-case line syntax: \\\\ \\n \\r \\t \\xHH (raw byte) \\u{HEX} (code point)."""
    out = bytearray()
    i = 0
    while i < len(line):
        c = line[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(line):
            raise ValueError(f"{where}: lone backslash at the end")
        e = line[i + 1]
        if e in "\\nrt":
            out += {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}[e]
            i += 2
        elif e == "x":
            h = line[i + 2:i + 4]
            if len(h) != 2 or any(ch not in "0123456789abcdefABCDEF" for ch in h):
                raise ValueError(f"{where}: bad \\x escape")
            out.append(int(h, 16))
            i += 4
        elif e == "u":
            j = line.find("}", i)
            h = line[i + 3:j]
            if line[i + 2:i + 3] != "{" or j < 0 or not (1 <= len(h) <= 6) or any(
                    ch not in "0123456789abcdefABCDEF" for ch in h):
                raise ValueError(f"{where}: bad \\u{{...}} escape")
            cp = int(h, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise ValueError(f"{where}: \\u{{{h}}} is not a scalar value")
            out += chr(cp).encode("utf-8")
            i = j + 1
        else:
            raise ValueError(f"{where}: unknown escape \\{e}")
    return bytes(out)


def edge_case_texts():
    raw = EDGE_FILE.read_bytes()
    texts = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line or line.startswith(b"#"):
            continue
        texts.append(unescape(line.decode("utf-8"), f"{EDGE_FILE.name}:{n}").decode("utf-8", "replace"))
    return raw, texts


FUZZ_UNITS = [
    "a", "z", "A", "Z", "q", "Q", "0", "7", "5", " ", " ", " ", "\t", "\n", "\r", "\r\n", "\v", "\f", "'", "'", "/", "!",
    ".", ",", "-", "_", '"', "'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'lL",
    "'d", "'D", "'x", "\u017F", "'\u017F", "\u212A", "'\u212A", "\u00C9", "\u03A9", "\u0416", "\u00E9", "\u03C9",
    "\u0436", "\u00DF", "\u1E9E", "\u0130", "\u0131", "\uFB05", "\u01C5", "\u1F88", "\u02B0", "\u30FC", "\u65E5",
    "\u05D0", "\u0E01", "\u0301", "\u0E31", "\u093E", "\u0663", "\u216B", "\u00BD", "\u00B2", "\u00A0", "\u0085",
    "\u3000", "\u2028", "\u1680", "\u2003", "\U0001F600", "\u200D", "\uFE0F", "\u200B", "\x1C", "\uFFFD", "\u00AD",
    "\u2019", "\u0295", "\u180E", "\U00031350", "\U00010D50", "\U00010D70", "\U00010940", "\U0001D2C0", "\u0897",
    "\u1C89", "\u1C8A", "\uA7CB", "\uA7CE", "\U00011F50", "\U0001E030", "hello", "The", " world", "1234567", "日本語"]


def fuzz_texts():
    import random
    rng = random.Random(20240611)

    def code_point():
        while True:
            r = rng.random()
            cp = rng.randint(0x20, 0x2FFF) if r < 0.5 else rng.randint(0x3000, 0xFFFF) if r < 0.8 else rng.randint(
                0x10000, 0x10FFFF)
            if not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)

    texts = ["".join(rng.choice(FUZZ_UNITS) if rng.random() < 0.8 else code_point() for _ in range(rng.randint(1, 30)))
             for _ in range(4000)]
    texts += ["".join(rng.choice([" ", "\n", "\t", "\r\n", "\u3000", "\u00A0", "x", "!"])
                      for _ in range(rng.randint(50, 2000))) for _ in range(50)]
    return texts


def read_wiki(path):
    p = Path(path)
    if p.suffix != ".zst":
        return p.read_bytes()
    try:
        import zstandard
        with open(p, "rb") as f:
            return zstandard.ZstdDecompressor().stream_reader(f).read()
    except ImportError:
        pass
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-dc", str(p)], check=True, stdout=subprocess.PIPE).stdout
    if p.with_suffix("").exists():  # the decompressed text beside it
        return p.with_suffix("").read_bytes()
    sys.exit(f"cannot decompress {p}: install the zstandard module or the zstd program, or put the "
             f"decompressed {p.with_suffix('').name} beside it")


# ---------------------------------------------------------------- encodings

def tiktoken_encodings():
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # no cache: read our files directly
    import tiktoken
    import tiktoken.load
    import tiktoken_ext.openai_public as op

    gpt2_ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_VOCAB), encoder_json_file=str(GPT2_ENCODER),
        vocab_bpe_hash=GPT2_VOCAB_SHA, encoder_json_hash=GPT2_ENCODER_SHA)
    o200k_ranks = tiktoken.load.load_tiktoken_bpe(str(O200K_FILE), expected_hash=O200K_SHA)
    # tiktoken's own constructors, with their downloads replaced by our files
    op.data_gym_to_mergeable_bpe_ranks = lambda *a, **k: gpt2_ranks
    op.load_tiktoken_bpe = lambda *a, **k: o200k_ranks
    specs = {"gpt2": op.gpt2(), "o200k_base": op.o200k_base(), "o200k_harmony": op.o200k_harmony()}
    encs = {}
    for name, s in specs.items():
        encs[name] = tiktoken.Encoding(s["name"], pat_str=s["pat_str"], mergeable_ranks=s["mergeable_ranks"],
                                       special_tokens=s["special_tokens"],
                                       explicit_n_vocab=s.get("explicit_n_vocab"))
    return f"tiktoken {tiktoken.__version__}", specs, encs


class PyEncoding:
    """tiktoken's algorithm in Python (CoreBPE::encode_ordinary and _byte_pair_merge)."""

    def __init__(self, pat, ranks, special_tokens):
        import regex
        self.pat = regex.compile(pat)
        self.ranks = ranks
        self.n_vocab = max(max(ranks.values()), max(special_tokens.values())) + 1
        self.eot_token = special_tokens["<|endoftext|>"]

    def merge(self, piece):
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while True:
            best, bi = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if bi < 0:
                return [self.ranks[p] for p in parts]
            parts[bi:bi + 2] = [parts[bi] + parts[bi + 1]]

    def encode_ordinary(self, text):
        out = []
        for m in self.pat.finditer(text):
            piece = m.group().encode("utf-8")
            r = self.ranks.get(piece)
            out.extend([r] if r is not None else self.merge(piece))
        return out


def python_encodings():
    import base64
    rank_to_byte = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    dg = {chr(b): b for b in rank_to_byte}
    n = 0
    for b in range(256):
        if b not in rank_to_byte:
            rank_to_byte.append(b)
            dg[chr(256 + n)] = b
            n += 1
    gpt2_ranks = {bytes([b]): i for i, b in enumerate(rank_to_byte)}
    for line in GPT2_VOCAB.read_text("utf-8").split("\n")[1:-1]:
        a, b = line.split()
        gpt2_ranks[bytes(dg[c] for c in a) + bytes(dg[c] for c in b)] = len(gpt2_ranks)
    o200k_ranks = {}
    for line in O200K_FILE.read_bytes().splitlines():
        if line:
            t, r = line.split()
            o200k_ranks[base64.b64decode(t)] = int(r)
    harmony = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018, "<|startoftext|>": 199998,
               "<|return|>": 200002, "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006,
               "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012}
    harmony.update({f"<|reserved_{i}|>": i for i in (200000, 200001, 200004, 200009, 200010, 200011)})
    harmony.update({f"<|reserved_{i}|>": i for i in range(200013, 201088)})
    specs = {
        "gpt2": {"pat_str": GPT2_PAT, "mergeable_ranks": gpt2_ranks, "special_tokens": {"<|endoftext|>": 50256}},
        "o200k_base": {"pat_str": O200K_PAT, "mergeable_ranks": o200k_ranks,
                       "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}},
        "o200k_harmony": {"pat_str": O200K_PAT, "mergeable_ranks": o200k_ranks, "special_tokens": harmony},
    }
    encs = {k: PyEncoding(s["pat_str"], s["mergeable_ranks"], s["special_tokens"]) for k, s in specs.items()}
    return "python re-implementation (NOT a reference)", specs, encs


def ranks_digest(ranks):
    h = hashlib.sha256()
    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(struct.pack("<II", r, len(tok)) + tok)
    return h.hexdigest()


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for the fixture files")
    ap.add_argument("--wiki", help="enwiki_2015_wikiextractor.val.txt.zst (or the decompressed .txt)")
    ap.add_argument("--backend", choices=["tiktoken", "python"], default="tiktoken")
    ap.add_argument("--bench", action="store_true", help="also time encode_ordinary (one thread)")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    generator, specs, encs = tiktoken_encodings() if args.backend == "tiktoken" else python_encodings()
    problems = []
    index = {"generator": generator, "tokenizers": {}, "texts": {}, "vectors": {}}
    for name, enc in encs.items():
        pat, n_vocab, eot = EXPECTED[name]
        s = specs[name]
        if s["pat_str"] != pat:
            problems.append(f"{name}: tiktoken's pattern differs from ours:\n  {s['pat_str']!r}\n  {pat!r}")
        if enc.n_vocab != n_vocab or enc.eot_token != eot:
            problems.append(f"{name}: n_vocab {enc.n_vocab} eot {enc.eot_token}, expected {n_vocab} {eot}")
        index["tokenizers"][name] = {
            "pat_str": s["pat_str"], "n_vocab": enc.n_vocab, "eot_token": enc.eot_token,
            "num_mergeable": len(s["mergeable_ranks"]), "mergeable_sha256": ranks_digest(s["mergeable_ranks"]),
            "special_tokens": sorted([v, k] for k, v in s["special_tokens"].items()),
        }

    edge_raw, edge = edge_case_texts()
    shakespeare = SHAKESPEARE_FILE.read_bytes().decode("utf-8", "replace")
    index["texts"]["edge"] = {"source": "tests/reference/tokenizer_edge_cases.txt", "source_sha256": sha256(edge_raw),
                              "chunks": [{"bytes": len(t.encode()), "sha256": sha256(t.encode())} for t in edge]}
    index["texts"]["shakespeare"] = {"source": "data/corpus/tinyshakespeare.txt",
                                     "bytes": len(shakespeare.encode()), "sha256": sha256(shakespeare.encode())}
    fuzz = fuzz_texts()
    fuzz_blob = (json.dumps(fuzz, ensure_ascii=True) + "\n").encode()
    (out_dir / "tokenizer_fuzz_texts.json").write_bytes(fuzz_blob)
    index["texts"]["fuzz"] = {"source": "tokenizer_fuzz_texts.json", "source_sha256": sha256(fuzz_blob),
                              "count": len(fuzz)}
    texts = {"edge": edge, "fuzz": fuzz, "shakespeare": [shakespeare]}
    wiki_full = None
    if args.wiki:
        raw = read_wiki(args.wiki)
        cut = raw.rfind(b"\n", 0, WIKI_PREFIX_BYTES) + 1
        wiki_full = raw.decode("utf-8", "replace")
        prefix = raw[:cut].decode("utf-8", "replace")
        zst_name = Path(args.wiki).name if args.wiki.endswith(".zst") else Path(args.wiki).name + ".zst"
        # the C++ test reads ../shared/data/corpus/enwiki_2015/<source>
        index["texts"]["wiki"] = {"source": zst_name, "raw_bytes": len(raw), "raw_sha256": sha256(raw),
                                  "prefix_raw_bytes": cut, "bytes": len(prefix.encode()),
                                  "sha256": sha256(prefix.encode()), "full_bytes": len(wiki_full.encode()),
                                  "full_sha256": sha256(wiki_full.encode())}
        texts["wiki"] = [prefix]
    else:
        print("warning: no --wiki, the Wikipedia vectors are not made", file=sys.stderr)

    for name, enc in encs.items():
        vec = index["vectors"][name] = {}
        file_owner = "o200k_base" if name == "o200k_harmony" else name
        for tname, chunks in texts.items():
            ids, counts = [], []
            for t in chunks:
                got = enc.encode_ordinary(t)
                counts.append(len(got))
                ids.extend(got)
            blob = ids_bytes(ids)
            fname = f"tokenizer_{file_owner}_{tname}.u32"
            if file_owner == name:
                (out_dir / fname).write_bytes(blob)
            entry = {"file": fname, "count": len(ids), "sha256": sha256(blob)}
            if tname in ("edge", "fuzz"):
                entry["counts"] = counts  # ids per text, in order
            vec[tname] = entry
            if name == "o200k_harmony" and sha256(blob) != index["vectors"]["o200k_base"][tname]["sha256"]:
                problems.append(f"o200k_harmony: {tname} ids differ from o200k_base's")
        if wiki_full is not None:
            t0 = time.time()
            ids = enc.encode_ordinary(wiki_full)
            vec["wiki_full"] = {"count": len(ids), "sha256": sha256(ids_bytes(ids))}
            print(f"{name}: wiki full {len(ids)} ids in {time.time() - t0:.2f}s")
        print(f"{name}: " + ", ".join(f"{t} {v['count']} ids" for t, v in vec.items()))

    if args.bench:  # encode_ordinary runs on the calling thread: one core
        bench_texts = {"shakespeare": shakespeare}
        if wiki_full is not None:
            bench_texts["wiki"] = wiki_full
        for name in ("gpt2", "o200k_base"):
            for tname, text in bench_texts.items():
                enc, n = encs[name], 0
                enc.encode_ordinary(text)  # warm-up
                t0 = time.time()
                while time.time() - t0 < 3.0:
                    enc.encode_ordinary(text)
                    n += 1
                dt = time.time() - t0
                print(json.dumps({"bench": generator, "tokenizer": name, "text": tname, "threads": 1,
                                  "MB_per_s": round(len(text.encode()) * n / dt / 1e6, 2)}))

    (out_dir / "tokenizer_vectors.json").write_text(json.dumps(index, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out_dir}/tokenizer_vectors.json with {generator}")
    if problems:
        print("PROBLEMS:\n" + "\n".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
