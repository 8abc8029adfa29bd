// Small filesystem helpers with the durability rules of checkpoints and shards:
// write to a temporary name in the same directory, fsync, rename, fsync the directory.
#pragma once

#include <string>
#include <string_view>

namespace nmoe::fs {

// Whole file as bytes; throws Error naming the path if it cannot be read.
std::string read_file(const std::string& path);
// Atomically replaces path with data (tmp + optional fsync + rename + dir fsync).
void write_file_atomic(const std::string& path, std::string_view data, bool fsync = true);
void fsync_path(const std::string& path);  // file or directory
bool exists(const std::string& path);
void make_dirs(const std::string& path);   // mkdir -p; throws on failure
std::string parent_dir(const std::string& path);
// Unique temporary sibling name for path (path + ".tmp-<pid>-<counter>").
std::string temp_sibling(const std::string& path);

}  // namespace nmoe::fs
