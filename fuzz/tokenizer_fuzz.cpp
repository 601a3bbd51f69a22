// libFuzzer target for the tokenizer (tokenizer/tokenizer.h).
//
// The committed DeepSeek-V4 tokenizer (tests/data/tokenizer, or $DSV4_TOKENIZER) is loaded once.
// The first input byte picks a mode, the rest is the payload:
//   0, 1  encode(payload) with AddedTokens::all (mode 0; ::none if bit 2 of the first byte is
//         set) or ::non_special (mode 1), any bytes. Checks: every id is in range,
//         decode_bytes(ids) == payload (exact inverse, even for invalid UTF-8), decode(ids) is
//         valid UTF-8 and equals the lossy (U+FFFD) form of the payload, and the streaming
//         decoder emits the same text as decode.
//   2     payload read as little-endian int32 ids (some out of range): decode must fail exactly
//         when an id names no token; otherwise decode is valid UTF-8 and the streaming decoder
//         agrees with it (skip_special on or off by the low bit of the first id).
//   3     payload as a tokenizer.json: from_json must return a Tokenizer or an error, never
//         crash; a loaded tokenizer must encode a fixed text into ids that decode.
// A broken promise traps (__builtin_trap), which libFuzzer reports as a crash.
//
// Build: cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DDSV4_BUILD_FUZZ=ON
//          -DDSV4_BUILD_TESTS=OFF -DDSV4_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
//          "-DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link,address,undefined"
//        cmake --build build-fuzz --target tokenizer_fuzz
// Run:   build-fuzz/fuzz/tokenizer_fuzz fuzz/corpus/tokenizer -max_total_time=180
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using dsv4::tokenizer::StreamDecoder;
using dsv4::tokenizer::Tokenizer;
namespace utf8 = dsv4::tokenizer::utf8;

const Tokenizer& tokenizer() {
  static const Tokenizer* tok = [] {
    const char* env = std::getenv("DSV4_TOKENIZER");
    std::string path = env ? env
                           : (std::filesystem::path(__FILE__).parent_path() / ".." / "tests" /
                              "data" / "tokenizer")
                                 .string();
    auto r = Tokenizer::load(path);
    if (!r.ok()) {
      std::fprintf(stderr, "tokenizer_fuzz: %s\n", r.status().to_string().c_str());
      std::abort();
    }
    return new Tokenizer(std::move(r).value());
  }();
  return *tok;
}

void check(bool cond) {
  if (!cond) __builtin_trap();
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder dec(tok, skip);
  std::string out;
  for (int32_t id : ids) {
    auto piece = dec.push(id);
    check(piece.ok());
    check(utf8::is_valid(*piece));
    check(dec.pending_bytes() <= 3);
    out += *piece;
  }
  out += dec.flush();
  return out;
}

void fuzz_encode(const Tokenizer& tok, std::string_view text, Tokenizer::AddedTokens match) {
  auto ids = tok.encode(text, match);
  check(ids.ok());
  for (int32_t id : *ids) check(id >= 0 && id < tok.vocab_size());
  auto raw = tok.decode_bytes(*ids);
  check(raw.ok() && *raw == text);
  auto decoded = tok.decode(*ids);
  check(decoded.ok() && utf8::is_valid(*decoded));
  std::string lossy;
  utf8::append_lossy(lossy, text);
  check(*decoded == lossy);
  check(stream_decode(tok, *ids, false) == *decoded);
}

void fuzz_decode(const Tokenizer& tok, std::string_view payload) {
  std::vector<int32_t> ids(payload.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), payload.data(), ids.size() * 4);
  // Fold most ids into a range near the vocabulary so that valid sequences are common.
  bool all_valid = true;
  for (int32_t& id : ids) {
    uint32_t u = static_cast<uint32_t>(id);
    if ((u >> 28) != 0xF)
      id = static_cast<int32_t>(u % (static_cast<uint32_t>(tok.vocab_size()) + 8));
    if (!tok.token_bytes(id)) all_valid = false;
  }
  bool skip = !ids.empty() && (ids[0] & 1);
  auto decoded = tok.decode(ids, skip);
  check(decoded.ok() == all_valid);
  if (!all_valid) return;
  check(utf8::is_valid(*decoded));
  check(stream_decode(tok, ids, skip) == *decoded);
}

void fuzz_load(std::string_view json) {
  auto tok = Tokenizer::from_json(json, "fuzz.json");
  if (!tok.ok()) {
    check(!tok.status().message().empty());
    return;
  }
  const std::string text = "Hello, world! 123 \xe4\xb8\xad\xe6\x96\x87 <s>";
  auto ids = tok->encode(text);
  if (!ids.ok()) return;
  // Every id encode produces names a token (bytes may differ: unk tokens, dropped bytes).
  for (int32_t id : *ids) check(tok->token_bytes(id).has_value());
  auto decoded = tok->decode(*ids);
  check(decoded.ok() && utf8::is_valid(*decoded));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto match = (data[0] & 4) ? Tokenizer::AddedTokens::none : Tokenizer::AddedTokens::all;
  switch (data[0] % 4) {
    case 0:
      fuzz_encode(tokenizer(), payload, match);
      break;
    case 1:
      fuzz_encode(tokenizer(), payload, Tokenizer::AddedTokens::non_special);
      break;
    case 2:
      fuzz_decode(tokenizer(), payload);
      break;
    default:
      fuzz_load(payload);
      break;
  }
  return 0;
}
