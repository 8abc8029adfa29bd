#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"

namespace nmoe::safetensors {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

template <typename... Args>
[[noreturn]] void st_fail(const std::string& path, Args&&... args) {
  fail("safetensors '", path, "': ", std::forward<Args>(args)...);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool dtype_from_string(const std::string& s, DType& out) {
  static const DType kAll[] = {DType::F32, DType::F64, DType::BF16, DType::I32,
                               DType::I64, DType::U8,  DType::U16,  DType::U32};
  for (DType t : kAll) {
    if (s == dtype_name(t)) {
      out = t;
      return true;
    }
  }
  return false;
}

// numel(shape) * itemsize, or false on overflow.
bool byte_size(const std::vector<int64_t>& shape, DType dtype, size_t& out) {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  out = n;
  return true;
}

// ---------------------------------------------------------------- writing

void write_all(int fd, const std::string& tmp, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("write to '", tmp, "' failed: ", std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// A temporary sibling file that is removed unless commit() renamed it into place.
class TempFile {
 public:
  explicit TempFile(const std::string& path) : path_(path), tmp_(fs::temp_sibling(path)) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    NMOE_CHECK(fd_ >= 0, "cannot create '", tmp_, "': ", std::strerror(errno));
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  void write(const void* data, size_t n) { write_all(fd_, tmp_, data, n); }
  void commit(bool fsync) {
    NMOE_CHECK(!fsync || ::fsync(fd_) == 0, "fsync of '", tmp_, "' failed: ", std::strerror(errno));
    int rc = ::close(fd_);
    fd_ = -1;
    NMOE_CHECK(rc == 0, "close of '", tmp_, "' failed: ", std::strerror(errno));
    NMOE_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "rename '", tmp_, "' -> '", path_,
               "' failed: ", std::strerror(errno));
    committed_ = true;
    if (fsync) fs::fsync_path(fs::parent_dir(path_));
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

void Writer::add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data) {
  NMOE_CHECK(!name.empty(), "safetensors: tensor name must not be empty");
  NMOE_CHECK(name != kMetadataKey, "safetensors: '", kMetadataKey, "' is reserved, not a tensor name");
  NMOE_CHECK(!entries_.count(name), "safetensors: duplicate tensor '", name, "'");
  for (int64_t d : shape)
    NMOE_CHECK(d >= 0, "safetensors: tensor '", name, "' has negative dimension in ", shape_str(shape));
  size_t nbytes = 0;
  NMOE_CHECK(byte_size(shape, dtype, nbytes), "safetensors: tensor '", name, "' shape ", shape_str(shape),
             " is too large");
  NMOE_CHECK(data != nullptr || nbytes == 0, "safetensors: tensor '", name, "' has null data");
  entries_.emplace(name, Entry{dtype, std::move(shape), data, nbytes});
}

void Writer::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void Writer::write(const std::string& path, bool fsync) const {
  json header = json::object();
  size_t offset = 0;
  for (const auto& [name, e] : entries_) {  // std::map: name order
    header[name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.nbytes}}};
    offset += e.nbytes;
  }
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& ex) {
    st_fail(path, "cannot encode header (names and metadata must be valid UTF-8): ", ex.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  fs::make_dirs(fs::parent_dir(path));
  TempFile out(path);
  unsigned char size_le[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) size_le[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(size_le, 8);
  out.write(text.data(), text.size());
  for (const auto& [name, e] : entries_) out.write(e.data, e.nbytes);
  out.commit(fsync);
}

// ---------------------------------------------------------------- reading

namespace {

std::vector<int64_t> parse_shape(const std::string& path, const std::string& name, const json& j) {
  if (!j.is_array()) st_fail(path, "tensor '", name, "': 'shape' is not an array");
  std::vector<int64_t> shape;
  for (const json& d : j) {
    bool ok = d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max());
    if (!ok) st_fail(path, "tensor '", name, "': shape entry ", d.dump(), " is not a non-negative integer");
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& j, size_t data_size) {
  if (!j.is_object()) st_fail(path, "tensor '", name, "': entry is not a JSON object");
  for (const auto& [key, value] : j.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      st_fail(path, "tensor '", name, "': unexpected key '", key, "'");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!j.contains(key)) st_fail(path, "tensor '", name, "': missing '", key, "'");

  TensorInfo info;
  info.name = name;
  const json& dt = j["dtype"];
  if (!dt.is_string()) st_fail(path, "tensor '", name, "': 'dtype' is not a string");
  if (!dtype_from_string(dt.get<std::string>(), info.dtype))
    st_fail(path, "tensor '", name, "': unsupported dtype '", dt.get<std::string>(), "'");
  info.shape = parse_shape(path, name, j["shape"]);

  const json& off = j["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    st_fail(path, "tensor '", name, "': 'data_offsets' must be [begin, end] of non-negative integers");
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end) st_fail(path, "tensor '", name, "': data_offsets [", begin, ", ", end, "] have begin > end");
  if (end > data_size)
    st_fail(path, "tensor '", name, "': data_offsets [", begin, ", ", end, ") outside the data section of ",
            data_size, " bytes");
  size_t expected = 0;
  if (!byte_size(info.shape, info.dtype, expected))
    st_fail(path, "tensor '", name, "': shape ", shape_str(info.shape), " is too large");
  if (end - begin != expected)
    st_fail(path, "tensor '", name, "': data_offsets hold ", end - begin, " bytes but ", dtype_name(info.dtype), " ",
            shape_str(info.shape), " needs ", expected);
  info.offset = begin;
  info.nbytes = expected;
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& j) {
  if (!j.is_object()) st_fail(path, "'", kMetadataKey, "' is not a JSON object");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) st_fail(path, "metadata value for key '", key, "' is not a string");
    out[key] = value.get<std::string>();
  }
  return out;
}

// Tensors must tile [0, data_size) exactly, as the reference implementation requires.
void check_tiling(const std::string& path, const std::map<std::string, TensorInfo>& tensors, size_t data_size) {
  std::vector<const TensorInfo*> order;
  for (const auto& [name, info] : tensors) order.push_back(&info);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  size_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    if (t->offset < cursor)
      st_fail(path, "tensor '", t->name, "' at [", t->offset, ", ", t->offset + t->nbytes, ") overlaps tensor '",
              prev->name, "' at [", prev->offset, ", ", cursor, ")");
    if (t->offset > cursor)
      st_fail(path, "bytes [", cursor, ", ", t->offset, ") before tensor '", t->name, "' belong to no tensor");
    cursor = t->offset + t->nbytes;
    if (t->nbytes > 0) prev = t;
  }
  if (cursor != data_size)
    st_fail(path, "data section has ", data_size, " bytes but tensors cover only ", cursor);
}

}  // namespace

Reader Reader::open(const std::string& path) {
  Reader r;
  r.map_ = MappedFile::open(path, "safetensors");
  const unsigned char* bytes = r.map_.data();
  size_t file_size = r.map_.size();
  if (file_size < 8) st_fail(path, "file too small (", file_size, " bytes) to hold the 8-byte header size");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= uint64_t(bytes[i]) << (8 * i);
  if (header_size > kMaxHeaderBytes)
    st_fail(path, "header size ", header_size, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  if (header_size > file_size - 8)
    st_fail(path, "truncated: header size ", header_size, " exceeds the ", file_size - 8, " bytes after it");
  size_t data_size = file_size - 8 - header_size;
  r.data_offset_ = 8 + header_size;

  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const json::exception& ex) {
    st_fail(path, "invalid JSON header: ", ex.what());
  }
  if (!header.is_object()) st_fail(path, "header is not a JSON object");
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey)
      r.metadata_ = parse_metadata(path, value);
    else
      r.tensors_.emplace(key, parse_entry(path, key, value, data_size));
  }
  check_tiling(path, r.tensors_, data_size);
  return r;
}

std::vector<std::string> Reader::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) out.push_back(name);
  return out;
}

bool Reader::has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& Reader::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) st_fail(path(), "no tensor named '", name, "'");
  return it->second;
}

const void* Reader::data(const std::string& name) const {
  const TensorInfo& t = info(name);
  return data_section() + t.offset;
}

void Reader::read_into(const std::string& name, DType dtype, const std::vector<int64_t>& shape, void* dst) const {
  const TensorInfo& t = info(name);
  if (t.dtype != dtype || t.shape != shape)
    st_fail(path(), "tensor '", name, "': expected ", dtype_name(dtype), " ", shape_str(shape), ", found ",
            dtype_name(t.dtype), " ", shape_str(t.shape));
  if (t.nbytes > 0) std::memcpy(dst, data_section() + t.offset, t.nbytes);
}

}  // namespace nmoe::safetensors
