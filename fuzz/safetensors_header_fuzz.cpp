// libFuzzer target for the safetensors header parser (formats/safetensors.h).
//
// Each input is parsed as:
//   1. a complete file image (8-byte length, header, data), exercising the length checks;
//   2. a 2-byte little-endian data size (mod 4097) followed by header JSON, wrapped into a file
//      whose length prefix matches and whose data area is that many zero bytes, so the fuzzer
//      reaches the entry, offset and tiling checks without guessing a consistent prefix.
// A third pass feeds the bytes to the index parser (model.safetensors.index.json).
// On success the target checks the reader's promises (every view lies inside the buffer, its
// size equals dtype_bytes(dtype, shape), views tile the data area) and traps otherwise.
//
// Build: cmake --preset fuzz && cmake --build --preset fuzz --target safetensors_header_fuzz
// Run:   build/fuzz/fuzz/safetensors_header_fuzz fuzz/corpus/safetensors_header \
//          -runs=1000000 -max_len=4096
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "formats/safetensors.h"

namespace {

using dsv4::formats::SafetensorsFile;

void check_file(const SafetensorsFile& f, std::span<const uint8_t> image) {
  uint64_t pos = f.data_offset();
  if (pos > image.size()) __builtin_trap();
  for (const auto& t : f.tensors()) {
    if (t.bytes.data() < image.data() || t.file_offset != pos) __builtin_trap();
    if (t.bytes.data() != image.data() + t.file_offset) __builtin_trap();
    if (t.file_offset + t.bytes.size() > image.size()) __builtin_trap();
    auto n = dsv4::formats::dtype_bytes(t.dtype, t.shape);
    if (!n.ok() || static_cast<uint64_t>(*n) != t.bytes.size()) __builtin_trap();
    if (f.find(t.name) != &t) __builtin_trap();
    pos += t.bytes.size();
  }
  if (pos != image.size()) __builtin_trap();
}

void parse_image(std::span<const uint8_t> image) {
  auto f = SafetensorsFile::parse(image, "fuzz.safetensors");
  if (f.ok()) {
    check_file(*f, image);
  } else if (f.status().message().empty()) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  parse_image(input);

  // Header-only mode: [u16 data size][header JSON].
  if (size >= 2) {
    const size_t data_bytes = (size_t{data[0]} | (size_t{data[1]} << 8)) % 4097;
    const size_t header_bytes = size - 2;
    std::vector<uint8_t> image;
    image.reserve(8 + header_bytes + data_bytes);
    for (int i = 0; i < 8; ++i) {
      image.push_back(static_cast<uint8_t>(uint64_t{header_bytes} >> (8 * i)));
    }
    image.insert(image.end(), data + 2, data + size);
    image.resize(image.size() + data_bytes, 0);
    parse_image(image);
  }

  auto idx = dsv4::formats::parse_safetensors_index(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.index.json");
  if (idx.ok()) {
    for (const auto& [tensor, file] : idx->weight_map) {
      if (file.empty() || file.find('/') != std::string::npos || file == "..") __builtin_trap();
    }
  }
  return 0;
}
