#include "formats/safetensors_writer.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "base/mmap_file.h"
#include "formats/safetensors.h"

namespace dsv4::formats {

namespace {
using json = nlohmann::json;

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// json::dump only throws on invalid UTF-8, which add()/set_metadata() rule out; contain it
// anyway so no exception leaves the module.
Result<std::string> dump_json(const json& j, int indent) {
  try {
    return j.dump(indent);
  } catch (const json::exception& e) {
    return internal_error(std::string("serializing JSON: ") + e.what());
  }
}
}  // namespace

Status SafetensorsWriter::add(std::string name, DType dtype, std::vector<int64_t> shape,
                              std::span<const uint8_t> bytes) {
  if (name == "__metadata__") {
    return invalid_argument("tensor name \"__metadata__\" is reserved by the safetensors format");
  }
  if (!is_valid_utf8(name)) return invalid_argument("tensor name is not valid UTF-8");
  if (tensors_.count(name)) return invalid_argument("duplicate tensor \"" + name + "\"");
  auto nbytes = dtype_bytes(dtype, shape);
  if (!nbytes.ok()) return nbytes.status().with_context("tensor \"" + name + "\"");
  if (static_cast<uint64_t>(*nbytes) != bytes.size()) {
    return invalid_argument("tensor \"" + name + "\": " + std::string(dtype_name(dtype)) + " " +
                            shape_string(shape) + " needs " + std::to_string(*nbytes) +
                            " bytes, got " + std::to_string(bytes.size()));
  }
  tensors_.emplace(std::move(name), Tensor{dtype, std::move(shape),
                                           std::vector<uint8_t>(bytes.begin(), bytes.end())});
  return ok_status();
}

Status SafetensorsWriter::set_metadata(std::string key, std::string value) {
  if (!is_valid_utf8(key) || !is_valid_utf8(value)) {
    return invalid_argument("metadata key and value must be valid UTF-8");
  }
  metadata_[std::move(key)] = std::move(value);
  return ok_status();
}

uint64_t SafetensorsWriter::data_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.bytes.size();
  return n;
}

Result<std::vector<uint8_t>> SafetensorsWriter::serialize_subset(
    const std::vector<const std::string*>& names) const {
  // Widest element first, then by name (reference writer order): keeps every tensor aligned
  // to its element size once the header is padded to 8 bytes.
  std::vector<const std::string*> order = names;
  std::sort(order.begin(), order.end(), [&](const std::string* a, const std::string* b) {
    int ba = dtype_bits(tensors_.at(*a).dtype);
    int bb = dtype_bits(tensors_.at(*b).dtype);
    if (ba != bb) return ba > bb;
    return *a < *b;
  });
  json header = json::object();
  if (!metadata_.empty()) {
    json md = json::object();
    for (const auto& [k, v] : metadata_) md[k] = v;
    header["__metadata__"] = std::move(md);
  }
  uint64_t offset = 0;
  for (const std::string* name : order) {
    const Tensor& t = tensors_.at(*name);
    json e = json::object();
    e["dtype"] = std::string(dtype_safetensors_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = json::array({offset, offset + t.bytes.size()});
    offset += t.bytes.size();
    header[*name] = std::move(e);
  }
  DSV4_ASSIGN_OR_RETURN(std::string text, dump_json(header, -1));
  text.resize((text.size() + 7) / 8 * 8, ' ');
  if (text.size() > kMaxHeaderBytes) {
    return invalid_argument("safetensors header would be " + std::to_string(text.size()) +
                            " bytes, over the " + std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const std::string* name : order) {
    const auto& b = tensors_.at(*name).bytes;
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

Result<std::vector<uint8_t>> SafetensorsWriter::serialize() const {
  std::vector<const std::string*> names;
  names.reserve(tensors_.size());
  for (const auto& [name, t] : tensors_) names.push_back(&name);
  return serialize_subset(names);
}

Status SafetensorsWriter::write(const std::string& path) const {
  DSV4_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, serialize());
  return write_file_atomic(path, bytes);
}

Result<std::vector<std::string>> SafetensorsWriter::write_sharded(const std::string& dir,
                                                                  uint64_t max_shard_bytes) const {
  namespace fs = std::filesystem;
  if (max_shard_bytes == 0) return invalid_argument("max_shard_bytes must be positive");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error(dir + ": cannot create directory: " + ec.message());

  // Greedy split in name order; an empty writer still produces one (empty) shard.
  std::vector<std::vector<const std::string*>> groups(1);
  uint64_t in_group = 0;
  for (const auto& [name, t] : tensors_) {
    if (!groups.back().empty() && in_group + t.bytes.size() > max_shard_bytes) {
      groups.emplace_back();
      in_group = 0;
    }
    groups.back().push_back(&name);
    in_group += t.bytes.size();
  }

  std::vector<std::string> files;
  json weight_map = json::object();
  for (size_t g = 0; g < groups.size(); ++g) {
    files.push_back(shard_name(g, groups.size()));
    DSV4_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, serialize_subset(groups[g]));
    DSV4_RETURN_IF_ERROR(write_file_atomic((fs::path(dir) / files.back()).string(), bytes));
    for (const std::string* name : groups[g]) weight_map[*name] = files.back();
  }
  json index = json::object();
  index["metadata"] = json::object({{"total_size", data_bytes()}});
  index["weight_map"] = std::move(weight_map);
  DSV4_ASSIGN_OR_RETURN(std::string text, dump_json(index, 2));
  text += '\n';
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  DSV4_RETURN_IF_ERROR(
      write_file_atomic((fs::path(dir) / std::string(kIndexFileName)).string(), bytes));
  return files;
}

}  // namespace dsv4::formats
