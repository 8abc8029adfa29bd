#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "dist/comm.h"

namespace nmoe {

namespace sfs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kFormatVersion = 1;

std::vector<int64_t> dims(const Shape& s) { return std::vector<int64_t>(s.d.begin(), s.d.begin() + s.n); }

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// Host copies of device tensors, kept alive until the safetensors file is written.
struct HostTensors {
  std::vector<std::vector<char>> bufs;
  const void* copy(Backend& B, const Tensor& t) {
    bufs.emplace_back(t.nbytes());
    B.copy_to_host(bufs.back().data(), t);
    return bufs.back().data();
  }
  // A parameter's tensor as stored: expert tensors hold every rank's experts
  // in global id order (rank r holds [r*El, (r+1)*El)), so a checkpoint does
  // not depend on the rank count. Every rank must call it for every tensor.
  const void* gather(Backend& B, const Param& p, const Tensor& t, Comm* comm, std::vector<int64_t>* shape) {
    *shape = dims(t.shape);
    if (!p.spec.per_expert || !comm || comm->world() == 1) return copy(B, t);
    std::string mine(t.nbytes(), '\0');
    B.copy_to_host(mine.data(), t);
    std::vector<std::string> all = comm->all_gather_bytes(mine);
    bufs.emplace_back();
    for (const std::string& part : all) bufs.back().insert(bufs.back().end(), part.begin(), part.end());
    (*shape)[0] *= comm->world();
    return bufs.back().data();
  }
};

// Reads elements [skip, skip + dst.numel()) of stored tensor `name` (in row-
// major order) into a device tensor, converting between F32 and F64 if needed.
void read_elements(const safetensors::Reader& r, const std::string& name, Backend& B, const Tensor& dst,
                   int64_t skip) {
  const auto& info = r.info(name);
  const int64_t n = dst.numel();
  if (n == 0) return;
  int64_t total = 1;
  for (int64_t x : info.shape) total *= x;
  NMOE_CHECK(skip >= 0 && skip + n <= total, "tensor '", name, "': elements [", skip, ", ", skip + n,
             ") of ", total);
  if (info.dtype == dst.dtype) {
    std::vector<char> buf(static_cast<size_t>(n) * dtype_size(dst.dtype));
    if (skip == 0 && n == total) {
      r.read_into(name, dst.dtype, info.shape, buf.data());
    } else {
      std::vector<char> all(info.nbytes);
      r.read_into(name, dst.dtype, info.shape, all.data());
      std::copy(all.begin() + skip * dtype_size(dst.dtype), all.begin() + (skip + n) * dtype_size(dst.dtype),
                buf.begin());
    }
    B.copy_from_host(dst, buf.data());
    return;
  }
  std::vector<double> d(total);
  if (info.dtype == DType::F32) {
    std::vector<float> f(total);
    r.read_into(name, DType::F32, info.shape, f.data());
    std::copy(f.begin(), f.end(), d.begin());
  } else {
    NMOE_CHECK(info.dtype == DType::F64, "tensor '", name, "' is ", dtype_name(info.dtype),
               "; expected F32 or F64");
    r.read_into(name, DType::F64, info.shape, d.data());
  }
  d.erase(d.begin(), d.begin() + skip);
  d.resize(n);
  if (dst.dtype == DType::F64) {
    B.copy_from_host(dst, d.data());
  } else {
    NMOE_CHECK(dst.dtype == DType::F32, "cannot load into a ", dtype_name(dst.dtype), " tensor");
    std::vector<float> f(d.begin(), d.end());
    B.copy_from_host(dst, f.data());
  }
}

// Reads a stored tensor into a device tensor, converting between F32 and F64
// if needed. With first_row >= 0, dst holds rows [first_row, first_row +
// dst.size(0)) of the stored tensor (this rank's experts).
void read_tensor(const safetensors::Reader& r, const std::string& name, Backend& B, const Tensor& dst,
                 int64_t first_row = -1) {
  NMOE_CHECK(r.has(name), "checkpoint is missing tensor '", name, "'");
  const auto& info = r.info(name);
  std::vector<int64_t> want = dims(dst.shape);
  if (first_row >= 0) {
    NMOE_CHECK(!info.shape.empty() && info.shape[0] >= first_row + want[0] &&
                   std::equal(info.shape.begin() + 1, info.shape.end(), want.begin() + 1, want.end()),
               "tensor '", name, "' has shape ", dims_str(info.shape), " in the checkpoint; this rank needs rows [",
               first_row, ", ", first_row + want[0], ") of ", dims_str(want), " rows");
  } else {
    NMOE_CHECK(info.shape == want, "tensor '", name, "' has shape ", dims_str(info.shape),
               " in the checkpoint but the model expects ", dst.shape.str());
  }
  const int64_t n = dst.numel();
  const int64_t skip = first_row < 0 ? 0 : first_row * (n / std::max<int64_t>(want[0], 1));
  read_elements(r, name, B, dst, skip);
}

// Reads elements [skip, skip + dst.numel()) of a stored tensor of `shape`
// into dst (this rank's shard of a dense moment).
void read_tensor_part(const safetensors::Reader& r, const std::string& name, Backend& B, const Shape& shape,
                      const Tensor& dst, int64_t skip) {
  NMOE_CHECK(r.has(name), "checkpoint is missing tensor '", name, "'");
  const auto& info = r.info(name);
  NMOE_CHECK(info.shape == dims(shape), "tensor '", name, "' has shape ", dims_str(info.shape),
             " in the checkpoint but the model expects ", shape.str());
  read_elements(r, name, B, dst, skip);
}

// The dense moments when they are sharded over ranks (ZeRO-1): every rank
// sends its shard of both moments once, and every rank receives the whole
// dense range of both (shards in rank order are the range in flat order), from
// which each dense tensor is cut. Every rank must construct it.
struct GatheredDenseMoments {
  int64_t begin = 0;
  size_t es = 0;
  std::vector<char> m, v;
  GatheredDenseMoments(Backend& B, const ParamStore& ps, Comm* comm) {
    NMOE_CHECK(comm && comm->world() == ps.shard_world(), "sharded moments need the ranks they are sharded over");
    const GroupRange own = ps.shard();
    const std::vector<int64_t>& b = ps.shard_bounds();
    begin = b.front();
    es = dtype_size(ps.flat_params().dtype);
    const size_t bytes = static_cast<size_t>(own.size()) * es;
    std::string mine(2 * bytes, '\0');
    if (bytes) {
      B.copy_to_host(mine.data(), ps.m(own.begin, own.end));
      B.copy_to_host(mine.data() + bytes, ps.v(own.begin, own.end));
    }
    const std::vector<std::string> all = comm->all_gather_bytes(mine);
    for (int r = 0; r < ps.shard_world(); ++r) {
      const size_t len = static_cast<size_t>(b[r + 1] - b[r]) * es;
      NMOE_CHECK(all[r].size() == 2 * len, "rank ", r, " sent ", all[r].size(), " bytes of moments; expected ",
                 2 * len);
      m.insert(m.end(), all[r].begin(), all[r].begin() + len);
      v.insert(v.end(), all[r].begin() + len, all[r].end());
    }
  }
  const void* at(const std::vector<char>& mv, int64_t flat) const { return mv.data() + (flat - begin) * es; }
};

int64_t step_of(const std::string& name) {
  if (name.rfind("step_", 0) != 0 || name.size() != 13) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoll(name.substr(5));
}

std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!sfs::is_directory(dir)) return out;
  for (const auto& e : sfs::directory_iterator(dir)) {
    if (!e.is_directory()) continue;
    int64_t s = step_of(e.path().filename().string());
    if (s >= 0 && sfs::exists(e.path() / "state.json")) out.emplace_back(s, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void remove_stale_temporaries(const std::string& dir) {
  for (const auto& e : sfs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) sfs::remove_all(e.path());
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

void save_weights(const std::string& path, Model& model, bool fsync, Comm* comm) {
  Backend& B = model.backend();
  HostTensors host;
  safetensors::Writer w;
  std::vector<int64_t> shape;
  for (const Param& p : model.params().all()) {
    const void* data = host.gather(B, p, p.w, comm, &shape);
    w.add(p.spec.name, p.w.dtype, shape, data);
  }
  for (const auto& [name, t] : model.buffers()) w.add(name, t.dtype, dims(t.shape), host.copy(B, t));
  w.set_metadata("format", "nmoe");
  if (!comm || comm->rank() == 0) w.write(path, fsync);
}

namespace {
int64_t first_row_of(const Param& p) { return p.spec.per_expert ? p.spec.first_expert : -1; }
}  // namespace

void load_weights(const std::string& path, Model& model) {
  auto r = safetensors::Reader::open(path);
  Backend& B = model.backend();
  for (const Param& p : model.params().all()) read_tensor(r, p.spec.name, B, p.w, first_row_of(p));
  for (const auto& [name, t] : model.buffers()) read_tensor(r, name, B, t);
  model.sync_compute_weights();
}

std::string save_checkpoint(const std::string& checkpoint_dir, const CheckpointState& st, Model& model,
                            bool fsync, int64_t keep_last_n, Comm* comm) {
  const std::string name = checkpoint_name(st.step);
  const std::string final_dir = checkpoint_dir + "/" + name;
  const bool writer = !comm || comm->rank() == 0;
  std::string tmp;
  if (writer) {
    fs::make_dirs(checkpoint_dir);
    remove_stale_temporaries(checkpoint_dir);
    tmp = fs::temp_sibling(final_dir);
    fs::make_dirs(tmp);
  }
  save_weights(tmp + "/model.safetensors", model, fsync, comm);
  {
    Backend& B = model.backend();
    HostTensors host;
    safetensors::Writer w;
    std::vector<int64_t> shape;
    const ParamStore& ps = model.params();
    std::optional<GatheredDenseMoments> dense;
    if (ps.moments_sharded()) dense.emplace(B, ps, comm);
    for (const Param& p : ps.all()) {
      const int64_t b = p.offset, e = p.offset + p.spec.shape.numel();
      const DType dt = p.w.dtype;
      if (dense && !p.spec.per_expert) {
        w.add("exp_avg/" + p.spec.name, dt, dims(p.spec.shape), dense->at(dense->m, b));
        w.add("exp_avg_sq/" + p.spec.name, dt, dims(p.spec.shape), dense->at(dense->v, b));
        continue;
      }
      const void* m = host.gather(B, p, ps.m(b, e).view(p.spec.shape), comm, &shape);
      w.add("exp_avg/" + p.spec.name, dt, shape, m);
      const void* v = host.gather(B, p, ps.v(b, e).view(p.spec.shape), comm, &shape);
      w.add("exp_avg_sq/" + p.spec.name, dt, shape, v);
    }
    if (writer) w.write(tmp + "/optimizer.safetensors", fsync);
  }
  if (!writer) {
    comm->barrier();  // returns once rank 0 has published the checkpoint
    return final_dir;
  }
  json j;
  j["format_version"] = kFormatVersion;
  j["step"] = st.step;
  j["tokens_seen"] = st.tokens_seen;
  j["adam_steps"] = st.adam_steps;
  j["loader"] = st.loader;
  j["rng"] = {std::to_string(st.rng[0]), std::to_string(st.rng[1]), std::to_string(st.rng[2]),
              std::to_string(st.rng[3])};
  j["world_size"] = st.world_size;
  j["run_id"] = st.run_id;
  j["fingerprint"] = st.fingerprint;
  j["fingerprint_config"] = json::parse(st.fingerprint_json);
  j["config"] = json::parse(st.config_json);
  j["files"] = {{"model.safetensors", sha256_file_hex(tmp + "/model.safetensors")},
                {"optimizer.safetensors", sha256_file_hex(tmp + "/optimizer.safetensors")}};
  fs::write_file_atomic(tmp + "/state.json", j.dump(2) + "\n", fsync);

  if (sfs::exists(final_dir)) sfs::remove_all(final_dir);
  sfs::rename(tmp, final_dir);
  if (fsync) fs::fsync_path(checkpoint_dir);
  fs::write_file_atomic(checkpoint_dir + "/latest", name + "\n", fsync);

  auto all = complete_checkpoints(checkpoint_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep_last_n) < all.size(); ++i) sfs::remove_all(all[i].second);
  if (comm) comm->barrier();
  return final_dir;
}

std::optional<std::string> find_latest_checkpoint(const std::string& checkpoint_dir) {
  const std::string latest = checkpoint_dir + "/latest";
  if (sfs::exists(latest)) {
    std::string name = fs::read_file(latest);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    const std::string dir = checkpoint_dir + "/" + name;
    if (step_of(name) >= 0 && sfs::exists(dir + "/state.json")) return dir;
  }
  auto all = complete_checkpoints(checkpoint_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

CheckpointState read_checkpoint_state(const std::string& ckpt_dir, bool weights_only) {
  json j;
  try {
    j = json::parse(fs::read_file(ckpt_dir + "/state.json"));
  } catch (const json::exception& e) {
    fail("checkpoint '", ckpt_dir, "': state.json is not valid JSON (", e.what(), ")");
  }
  CheckpointState st;
  try {
    NMOE_CHECK(j.at("format_version").get<int>() == kFormatVersion, "checkpoint '", ckpt_dir,
               "' has format version ", j.at("format_version").get<int>(), "; this build reads version ",
               kFormatVersion);
    st.step = j.at("step").get<int64_t>();
    st.tokens_seen = j.at("tokens_seen").get<double>();
    st.adam_steps = j.at("adam_steps").get<int64_t>();
    st.loader = j.at("loader");
    for (int i = 0; i < 4; ++i) st.rng[i] = std::stoull(j.at("rng").at(i).get<std::string>());
    st.world_size = j.at("world_size").get<int64_t>();
    st.run_id = j.at("run_id").get<std::string>();
    st.fingerprint = j.at("fingerprint").get<std::string>();
    st.fingerprint_json = j.at("fingerprint_config").dump();
    st.config_json = j.at("config").dump();
    NMOE_CHECK(!weights_only || j.at("files").contains("model.safetensors"), "checkpoint '", ckpt_dir,
               "': state.json lists no model.safetensors");
    for (const auto& [file, sum] : j.at("files").items()) {
      if (weights_only && file != "model.safetensors") continue;
      std::string actual = sha256_file_hex(ckpt_dir + "/" + file);
      NMOE_CHECK(actual == sum.get<std::string>(), "checkpoint '", ckpt_dir, "': ", file,
                 " is corrupted (SHA-256 ", actual, ", expected ", sum.get<std::string>(), ")");
    }
  } catch (const json::exception& e) {
    fail("checkpoint '", ckpt_dir, "': state.json is missing or has a malformed field (", e.what(), ")");
  }
  return st;
}

CheckpointState load_checkpoint(const std::string& ckpt_dir, Model& model, const Config& cfg) {
  CheckpointState st = read_checkpoint_state(ckpt_dir);
  const std::string current = cfg.fingerprint();
  if (st.fingerprint != current) {
    std::string keys;
    for (const std::string& k : config_diff(st.fingerprint_json, cfg.fingerprint_json()))
      keys += (keys.empty() ? "" : ", ") + k;
    fail("cannot resume from '", ckpt_dir, "': the config changed since it was written (keys: ", keys,
         "). Restore those values, or start a new run with resume = false or another checkpoint_dir");
  }
  // Expert tensors are stored whole, so any rank count that divides the
  // experts can resume (each rank reads its experts' rows).
  load_weights(ckpt_dir + "/model.safetensors", model);
  auto r = safetensors::Reader::open(ckpt_dir + "/optimizer.safetensors");
  // Dense moments sharded over ranks (ZeRO-1): each rank reads its shard's
  // elements of the whole tensors.
  const ParamStore& ps = model.params();
  Backend& B = model.backend();
  for (const Param& p : ps.all()) {
    const int64_t b = p.offset, e = p.offset + p.spec.shape.numel();
    const std::string m = "exp_avg/" + p.spec.name, v = "exp_avg_sq/" + p.spec.name;
    if (ps.holds_moments(b, e)) {
      read_tensor(r, m, B, ps.m(b, e).view(p.spec.shape), first_row_of(p));
      read_tensor(r, v, B, ps.v(b, e).view(p.spec.shape), first_row_of(p));
      continue;
    }
    const GroupRange own = ps.shard();
    const int64_t lo = std::clamp(b, own.begin, own.end), hi = std::clamp(e, lo, own.end);
    read_tensor_part(r, m, B, p.spec.shape, ps.m(lo, hi), lo - b);
    read_tensor_part(r, v, B, p.spec.shape, ps.v(lo, hi), lo - b);
  }
  return st;
}

}  // namespace nmoe
