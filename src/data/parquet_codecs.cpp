// Page decompression: UNCOMPRESSED, SNAPPY (libsnappy), GZIP (zlib), ZSTD
// (libzstd). The output must be exactly the page's uncompressed size. Buffers
// grow with the data actually produced rather than trusting the size in the
// header, so a corrupted size cannot make us allocate gigabytes up front.
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <memory>

#include "data/parquet.h"

namespace nmoe::parquet {

namespace {

// Pages hold at most INT32_MAX bytes; the first allocation is capped so that
// a huge declared size is only paid for when the data really decompresses to it.
constexpr size_t kFirstChunk = size_t{1} << 20;

size_t next_capacity(size_t have, size_t want) {
  return std::min(want, std::max(kFirstChunk, have * 2));
}

void decompress_snappy(const uint8_t* src, size_t size, size_t want, std::string& out) {
  const char* in = reinterpret_cast<const char*>(src);
  size_t len = 0;
  if (snappy_uncompressed_length(in, size, &len) != SNAPPY_OK) corrupt("snappy data has no valid length header");
  if (len != want) corrupt("snappy data holds ", len, " bytes, the page header says ", want);
  if (snappy_validate_compressed_buffer(in, size) != SNAPPY_OK) corrupt("snappy data is corrupt");
  out.resize(want);
  size_t got = want;
  if (snappy_uncompress(in, size, out.data(), &got) != SNAPPY_OK || got != want)
    corrupt("snappy data is corrupt");
}

// Makes room after produced bytes: grows towards want, then one byte past it
// so that output beyond the declared size is detected.
void make_room(std::string& out, size_t produced, size_t want, const char* codec) {
  if (produced < out.size()) return;
  if (out.size() > want) corrupt(codec, " data holds more than the page's ", want, " bytes");
  out.resize(out.size() >= want ? want + 1 : next_capacity(out.size(), want));
}

void decompress_gzip(const uint8_t* src, size_t size, size_t want, std::string& out) {
  z_stream zs{};
  // 15 + 32: zlib or gzip header, detected automatically.
  if (inflateInit2(&zs, 15 + 32) != Z_OK) corrupt("zlib initialisation failed");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  out.clear();
  zs.next_in = const_cast<Bytef*>(src);
  size_t in_left = size, produced = 0;
  for (;;) {
    make_room(out, produced, want, "gzip");
    size_t room = std::min<size_t>(out.size() - produced, 1u << 30);
    uInt take = static_cast<uInt>(std::min<size_t>(in_left, 1u << 30));
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = static_cast<uInt>(room);
    zs.avail_in = take;
    int rc = inflate(&zs, Z_NO_FLUSH);
    in_left -= take - zs.avail_in;
    produced += room - zs.avail_out;
    if (produced > want) corrupt("gzip data holds more than the page's ", want, " bytes");
    if (rc == Z_STREAM_END) {
      if (in_left == 0) break;
      // Several gzip members may follow each other.
      if (inflateReset(&zs) != Z_OK) corrupt("gzip data is corrupt");
      continue;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) corrupt("gzip data is corrupt (zlib: ", zs.msg ? zs.msg : "error", ")");
    if (in_left == 0 && zs.avail_out != 0) corrupt("gzip data ends early");
  }
  if (produced != want) corrupt("gzip data holds ", produced, " bytes, the page header says ", want);
  out.resize(want);
}

void decompress_zstd(const uint8_t* src, size_t size, size_t want, std::string& out) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!ctx) corrupt("zstd initialisation failed");
  out.clear();
  ZSTD_inBuffer in{src, size, 0};
  size_t produced = 0;
  for (;;) {
    make_room(out, produced, want, "zstd");
    ZSTD_outBuffer ob{out.data(), out.size(), produced};
    size_t in_before = in.pos;
    size_t rc = ZSTD_decompressStream(ctx.get(), &ob, &in);
    if (ZSTD_isError(rc)) corrupt("zstd data is corrupt (", ZSTD_getErrorName(rc), ")");
    bool progress = in.pos != in_before || ob.pos != produced;
    produced = ob.pos;
    if (produced > want) corrupt("zstd data holds more than the page's ", want, " bytes");
    if (in.pos == in.size && rc == 0) break;  // last frame complete and flushed
    if (in.pos == in.size && ob.pos < ob.size) corrupt("zstd data ends early");
    if (!progress) corrupt("zstd data is corrupt");
  }
  if (produced != want) corrupt("zstd data holds ", produced, " bytes, the page header says ", want);
  out.resize(want);
}

}  // namespace

void decompress(int32_t codec, const uint8_t* src, size_t size, size_t uncompressed_size, std::string& out) {
  if (size == 0 && uncompressed_size == 0 && (codec == SNAPPY || codec == GZIP || codec == ZSTD)) {
    out.clear();  // an empty page some writers store without a compressed stream
    return;
  }
  switch (codec) {
    case UNCOMPRESSED:
      if (size != uncompressed_size)
        corrupt("uncompressed page of ", size, " bytes, but its header says ", uncompressed_size);
      out.assign(reinterpret_cast<const char*>(src), size);
      return;
    case SNAPPY: return decompress_snappy(src, size, uncompressed_size, out);
    case GZIP: return decompress_gzip(src, size, uncompressed_size, out);
    case ZSTD: return decompress_zstd(src, size, uncompressed_size, out);
    default:
      corrupt("compression codec ", codec_name(codec),
              " is not supported (supported: UNCOMPRESSED, SNAPPY, GZIP, ZSTD)");
  }
}

}  // namespace nmoe::parquet
