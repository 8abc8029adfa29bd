#!/usr/bin/env python3
"""Writes the pyarrow Parquet fixtures for tests/test_parquet.cpp.

Usage: python3 tests/reference/make_parquet_fixtures.py OUTDIR
       (normally OUTDIR = tests/reference/fixtures/parquet)

Needs pyarrow. For each <name>.parquet it writes <name>.expected.jsonl with one
JSON value per row of the "text" column (the string, or null); for other
columns checked by the test, <name>.<column>.expected.jsonl. The files cover:
codecs none / snappy / gzip / zstd; data pages v1 and v2; dictionary on, off,
and falling back to PLAIN mid-chunk; optional columns with nulls and required
ones; several row groups with many small pages; unicode (CJK, emoji, RTL,
combining marks, NUL bytes) and empty strings; a multi-column table (text,
int64 id, a struct and a list) for column selection and errors; and, where
this pyarrow can write them, DELTA_LENGTH_BYTE_ARRAY and DELTA_BYTE_ARRAY.
Everything is deterministic; each file stays well under 100 KB.
"""
import json
import os
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be or "
         "has had one their not but all new more first after two other also been time who into year can "
         "model expert router token layer gradient batch shard parquet column page dictionary").split()
UNICODE = [
    "", "日本語のテキストです。", "中文文本，包含标点。", "한국어 문장", "emoji 🚀🔥👩‍👩‍👧 done",
    "Ελληνικά και Кириллица", "עברית مرحبا بالعالم", "e\u0301 combining", "tab\tnew\nline \"quoted\" \\",
    "nul\x00byte", "🙂", " leading and trailing spaces ", "x" * 700,
]


def sentence(rng, lo=3, hi=25):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def texts(n, seed, nulls=0.0, repeats=0.3, unicode=0.1):
    rng = random.Random(seed)
    pool = [sentence(rng) for _ in range(12)]
    out = []
    for i in range(n):
        r = rng.random()
        if r < nulls:
            out.append(None)
        elif r < nulls + repeats:
            out.append(rng.choice(pool))           # repeated values: dictionaries and shared prefixes
        elif r < nulls + repeats + unicode:
            out.append(rng.choice(UNICODE))
        else:
            out.append(f"doc {i}: " + sentence(rng))
    return out


def write_expected(path, values):
    with open(path, "w", encoding="utf-8") as f:
        for v in values:
            f.write(json.dumps(v, ensure_ascii=False) + "\n")


def write(outdir, name, table, expected, **kw):
    """Writes table with pq.write_table(**kw); options this pyarrow lacks are
    dropped with a note (the summary shows what the file really contains)."""
    path = os.path.join(outdir, name + ".parquet")
    while True:
        try:
            pq.write_table(table, path, **kw)
            break
        except TypeError as e:
            bad = [k for k in kw if f"'{k}'" in str(e)]
            if not bad:
                raise
            print(f"  note: this pyarrow has no write_table option {bad[0]!r}; writing {name} without it")
            del kw[bad[0]]
    back = pq.read_table(path)
    for column, values in expected.items():
        got = back.column(column).to_pylist() if "." not in column else \
            [None if s is None else s.get(column.split(".", 1)[1]) for s in back.column(column.split(".")[0]).to_pylist()]
        assert got == values, f"{name}: {column} does not read back"
        suffix = "" if column == "text" else "." + column
        write_expected(os.path.join(outdir, name + suffix + ".expected.jsonl"), values)
    md = pq.ParquetFile(path).metadata
    encodings, codecs = set(), set()
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            if col.path_in_schema == "text":
                encodings.update(col.encodings)
                codecs.add(col.compression)
    size = os.path.getsize(path)
    print(f"{name + '.parquet':32s} {size:7d} B  rows {md.num_rows:4d}  row groups {md.num_row_groups:2d}  "
          f"text: {'/'.join(sorted(codecs))} {'/'.join(sorted(encodings))}")
    assert size < 100_000, f"{name} is {size} bytes; keep fixtures under 100 KB"
    return md


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".parquet") or f.endswith(".expected.jsonl"):
            os.remove(os.path.join(outdir, f))
    print(f"pyarrow {pa.__version__} -> {outdir}")
    small_pages = dict(row_group_size=120, data_page_size=512, write_batch_size=16)

    def simple(name, n, seed, nulls, required=False, **kw):
        vals = texts(n, seed, nulls=nulls)
        field = pa.field("text", pa.string(), nullable=not required)
        write(outdir, name, pa.table({"text": pa.array(vals, pa.string())}, schema=pa.schema([field])),
              {"text": vals}, **kw)

    # Codecs x page versions x dictionary, with nulls, several row groups and many pages.
    simple("none_v1_plain_required", 300, 1, 0.0, required=True, compression="none", data_page_version="1.0",
           use_dictionary=False, **small_pages)
    simple("snappy_v1_dict_nulls", 400, 2, 0.15, compression="snappy", data_page_version="1.0",
           use_dictionary=True, **small_pages)
    simple("gzip_v2_dict_nulls", 400, 3, 0.15, compression="gzip", data_page_version="2.0",
           use_dictionary=True, **small_pages)
    simple("zstd_v2_plain_nulls", 400, 4, 0.2, compression="zstd", data_page_version="2.0",
           use_dictionary=False, **small_pages)
    simple("zstd_v1_dict_required", 300, 5, 0.0, required=True, compression="zstd", data_page_version="1.0",
           use_dictionary=True, **small_pages)
    simple("snappy_v2_plain", 300, 6, 0.05, compression="snappy", data_page_version="2.0",
           use_dictionary=False, **small_pages)
    simple("none_v2_dict", 300, 7, 0.1, compression="none", data_page_version="2.0", use_dictionary=True,
           **small_pages)
    simple("gzip_v1_plain", 300, 8, 0.1, compression="gzip", data_page_version="1.0", use_dictionary=False,
           **small_pages)
    # Tiny row groups: many chunks of a few rows each.
    simple("many_row_groups", 200, 9, 0.1, compression="snappy", use_dictionary=True, row_group_size=7,
           data_page_size=64, write_batch_size=4)
    # Dictionary that outgrows its limit: dictionary-encoded pages, then PLAIN pages in the same chunk.
    simple("dict_fallback", 600, 10, 0.05, compression="zstd", use_dictionary=True, row_group_size=600,
           data_page_size=1024, write_batch_size=32, dictionary_pagesize_limit=2048)
    # An empty table.
    simple("empty", 0, 11, 0.0, compression="snappy")

    # Unicode, empty strings, NUL bytes, long values; a large_string column is
    # stored as the same BYTE_ARRAY.
    uni = UNICODE * 6 + [None, ""]
    write(outdir, "unicode", pa.table({"text": pa.array(uni, pa.large_string())}), {"text": uni},
          compression="zstd", use_dictionary=False, row_group_size=40, data_page_size=256, write_batch_size=8)

    # Several columns: selection by name, and errors for non-string, list and missing columns.
    n = 150
    rng = random.Random(12)
    text = texts(n, 12, nulls=0.1)
    ids = list(range(1000, 1000 + n))
    meta = [None if i % 11 == 0 else {"url": None if i % 4 == 0 else f"https://example.com/{i}",
                                       "score": rng.random()} for i in range(n)]
    tags = [[rng.choice(WORDS) for _ in range(rng.randint(0, 3))] for _ in range(n)]
    table = pa.table({
        "id": pa.array(ids, pa.int64()),
        "text": pa.array(text, pa.string()),
        "meta": pa.array(meta, pa.struct([("url", pa.string()), ("score", pa.float64())])),
        "tags": pa.array(tags, pa.list_(pa.string())),
    })
    urls = [None if m is None else m["url"] for m in meta]
    write(outdir, "multi_column", table, {"text": text, "meta.url": urls}, compression="snappy",
          row_group_size=50, data_page_size=512, write_batch_size=16)

    # Delta string encodings (pyarrow >= 12 or so); skipped with a note where unsupported.
    for enc, name, version, comp in [("DELTA_LENGTH_BYTE_ARRAY", "delta_length_byte_array", "1.0", "zstd"),
                                     ("DELTA_BYTE_ARRAY", "delta_byte_array", "2.0", "snappy"),
                                     ("DELTA_BYTE_ARRAY", "delta_byte_array_v1_none", "1.0", "none")]:
        vals = texts(400, 13, nulls=0.1, repeats=0.5)
        # Sorted values share long prefixes, which DELTA_BYTE_ARRAY exploits.
        if name.startswith("delta_byte_array"):
            vals = sorted(v for v in vals if v is not None) + [None] * vals.count(None)
            tail = vals[-60:]
            random.Random(14).shuffle(tail)  # nulls mixed into the last values
            vals[-60:] = tail
        try:
            write(outdir, name, pa.table({"text": pa.array(vals, pa.string())}), {"text": vals},
                  compression=comp, data_page_version=version, use_dictionary=False,
                  column_encoding={"text": enc}, **small_pages)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, ValueError) as e:
            print(f"  note: pyarrow {pa.__version__} cannot write {enc} ({e}); {name} skipped")
            for f in (name + ".parquet", name + ".expected.jsonl"):
                if os.path.exists(os.path.join(outdir, f)):
                    os.remove(os.path.join(outdir, f))

    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"total {total} bytes in {outdir}")
    assert total < 1_000_000, "fixtures must stay under 1 MB in total"


if __name__ == "__main__":
    main()
