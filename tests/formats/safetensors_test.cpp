#include "formats/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/mmap_file.h"
#include "formats/safetensors_writer.h"

namespace dsv4::formats {
namespace {

namespace fs = std::filesystem;

// ---- helpers -------------------------------------------------------------------------------

// A fresh, empty directory per test, removed again at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = (fs::temp_directory_path() / ("dsv4_st_" + std::to_string(::getpid()) + "_" +
                                          info->test_suite_name() + "_" + info->name()))
                .string();
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// 8-byte LE `declared_len`, then `header`, then `data_bytes` bytes valued 0, 1, 2, ...
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes, uint64_t declared_len) {
  std::vector<uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(declared_len >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<uint8_t>(i));
  return out;
}
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  return raw_file(header, data_bytes, header.size());
}

void write_bytes(const std::string& path, std::span<const uint8_t> bytes) {
  ASSERT_TRUE(write_file_atomic(path, bytes).ok());
}
void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, as_bytes(text));
}

constexpr const char* kSrc = "/ckpt/bad.safetensors";

// Parses `file` under the name kSrc and checks the error code and that the message mentions
// every needle (the file, and the tensor where there is one).
void expect_parse_error(const std::vector<uint8_t>& file, ErrorCode code,
                        std::vector<std::string> needles) {
  auto r = SafetensorsFile::parse(file, kSrc);
  ASSERT_FALSE(r.ok()) << "parsed a malformed file";
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  needles.push_back(kSrc);
  for (const auto& n : needles) {
    EXPECT_NE(r.status().message().find(n), std::string::npos)
        << "message lacks '" << n << "': " << r.status().message();
  }
}

void expect_error(const Status& s, ErrorCode code, const std::vector<std::string>& needles) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), code) << s.to_string();
  for (const auto& n : needles) {
    EXPECT_NE(s.message().find(n), std::string::npos)
        << "message lacks '" << n << "': " << s.message();
  }
}

std::vector<uint8_t> iota_bytes(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i * 7);
  return v;
}

std::vector<uint8_t> view_bytes(const TensorView& t) {
  return {t.bytes.begin(), t.bytes.end()};
}

// ---- valid files ---------------------------------------------------------------------------

TEST(Safetensors, ReadsFileWrittenByReferenceWriter) {
  // Written by the Python `safetensors` package (tests/data/safetensors/gen_reference.py).
  const std::string path =
      std::string(DSV4_TEST_DATA_DIR) + "/safetensors/reference_small.safetensors";
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->tensors().size(), 9u);
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata().at("format"), "pt");

  const TensorView* a = f->find("model.a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::f32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a->size_bytes(), 24u);
  for (int i = 0; i < 6; ++i) {
    float v;
    std::memcpy(&v, a->data() + 4 * i, 4);
    EXPECT_EQ(v, static_cast<float>(i));
  }
  EXPECT_TRUE(a->is_aligned(4));

  const TensorView* b = f->find("model.b.bf16");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::bf16);
  EXPECT_EQ(view_bytes(*b), (std::vector<uint8_t>{0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f}));

  const TensorView* w = f->find("layers.0.attn.wq_a.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::f8_e4m3);
  EXPECT_EQ(view_bytes(*w), (std::vector<uint8_t>{0x38, 0xb0, 0x7e, 0x00}));

  const TensorView* s = f->find("layers.0.attn.wq_a.scale");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->dtype, DType::f8_e8m0);
  EXPECT_EQ(s->shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(view_bytes(*s), (std::vector<uint8_t>{0x7f, 0x7e}));

  const TensorView* e = f->find("layers.0.ffn.experts.0.w1.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, DType::i8);
  EXPECT_EQ(view_bytes(*e), (std::vector<uint8_t>{0x21, 0xff, 0x00, 0x7f}));
  // The loader's view of a V4 FP4 expert.
  auto fp4 = reinterpret(*e, DType::f4_e2m1, {2, 4});
  ASSERT_TRUE(fp4.ok()) << fp4.status().to_string();
  EXPECT_EQ(fp4->bytes.data(), e->bytes.data());

  const TensorView* f4 = f->find("model.f.f4");
  ASSERT_NE(f4, nullptr);
  EXPECT_EQ(f4->dtype, DType::f4_e2m1);
  EXPECT_EQ(f4->shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(view_bytes(*f4), (std::vector<uint8_t>{0x21, 0xff, 0x00, 0x7f}));

  const TensorView* i64 = f->find("model.c.i64");
  ASSERT_NE(i64, nullptr);
  int64_t vals[2];
  std::memcpy(vals, i64->data(), 16);
  EXPECT_EQ(vals[0], -1);
  EXPECT_EQ(vals[1], int64_t{1} << 40);
  EXPECT_TRUE(i64->is_aligned(8));

  const TensorView* scalar = f->find("model.d.scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_EQ(scalar->rank(), 0u);
  EXPECT_EQ(scalar->elements(), 1);
  EXPECT_EQ(view_bytes(*scalar), (std::vector<uint8_t>{0x00, 0x42}));  // f16 3.0

  const TensorView* empty = f->find("model.e.empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->elements(), 0);
  EXPECT_EQ(empty->size_bytes(), 0u);

  EXPECT_EQ(f->find("model.a"), nullptr);
  // Offsets are consistent with the file layout.
  for (const TensorView& t : f->tensors()) {
    EXPECT_EQ(t.bytes.data(),
              f->tensors()[0].bytes.data() - f->tensors()[0].file_offset + t.file_offset);
    EXPECT_GE(t.file_offset, f->data_offset());
  }
}

TEST(Safetensors, HandWrittenHeaderInAnyOrder) {
  // Keys out of offset order, \u escapes in a name, an unknown field, whitespace padding.
  const std::string header =
      "{ \"b\\u00e9\" : {\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6],\"extra\":[1]},\n"
      "  \"a\": {\"shape\":[1],\"data_offsets\":[0,4],\"dtype\":\"I32\"} }   ";
  auto file = raw_file(header, 6);
  auto f = SafetensorsFile::parse(file, "mem");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[0].name, "a");  // offset order
  EXPECT_EQ(f->tensors()[1].name, "b\xc3\xa9");
  const TensorView* b = f->find("b\xc3\xa9");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(view_bytes(*b), (std::vector<uint8_t>{4, 5}));
  EXPECT_EQ(b->file_offset, 8 + header.size() + 4);
  EXPECT_TRUE(f->metadata().empty());
}

TEST(Safetensors, EmptyHeaderObjectIsAnEmptyFile) {
  auto f = SafetensorsFile::parse(raw_file("{}", 0), "mem");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_TRUE(f->tensors().empty());
}

SafetensorsWriter all_dtypes_writer() {
  SafetensorsWriter w;
  int k = 0;
  for (int i = 0; i < kDTypeCount; ++i) {
    auto t = static_cast<DType>(i);
    std::vector<int64_t> shape =
        dtype_is_packed(t) ? std::vector<int64_t>{3, 8} : std::vector<int64_t>{2, 3};
    auto n = dtype_bytes(t, shape);
    EXPECT_TRUE(n.ok());
    auto bytes = iota_bytes(static_cast<size_t>(*n), static_cast<uint8_t>(k++));
    EXPECT_TRUE(w.add("t." + std::string(dtype_name(t)), t, shape, bytes).ok());
  }
  EXPECT_TRUE(w.add("z.scalar", DType::f32, {}, iota_bytes(4)).ok());
  EXPECT_TRUE(w.add("z.empty", DType::bf16, {4, 0}, {}).ok());
  EXPECT_TRUE(w.set_metadata("format", "pt").ok());
  EXPECT_TRUE(w.set_metadata("note", "tiny \xe2\x9c\x93").ok());
  return w;
}

void expect_same_tensors(const SafetensorsModel& m, const SafetensorsWriter& /*w*/) {
  // Rebuilds what the writer was given and compares field by field.
  int k = 0;
  for (int i = 0; i < kDTypeCount; ++i) {
    auto t = static_cast<DType>(i);
    const TensorView* v = m.find("t." + std::string(dtype_name(t)));
    ASSERT_NE(v, nullptr) << dtype_name(t);
    EXPECT_EQ(v->dtype, t);
    std::vector<int64_t> shape =
        dtype_is_packed(t) ? std::vector<int64_t>{3, 8} : std::vector<int64_t>{2, 3};
    EXPECT_EQ(v->shape, shape);
    EXPECT_EQ(view_bytes(*v),
              iota_bytes(static_cast<size_t>(*dtype_bytes(t, shape)), static_cast<uint8_t>(k++)));
    // Element-size alignment of the mapped view (the writer's layout promise).
    size_t elem = static_cast<size_t>(std::max(1, dtype_bits(t) / 8));
    EXPECT_TRUE(v->is_aligned(elem)) << dtype_name(t);
  }
  const TensorView* s = m.find("z.scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  const TensorView* e = m.find("z.empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{4, 0}));
  EXPECT_EQ(e->size_bytes(), 0u);
}

TEST(Safetensors, WriterRoundTripSingleFile) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  SafetensorsWriter w = all_dtypes_writer();
  const std::string path = dir + "/model.safetensors";
  ASSERT_TRUE(w.write(path).ok());

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->metadata().at("note"), "tiny \xe2\x9c\x93");
  EXPECT_EQ(f->data_offset() % 8, 0u);
  EXPECT_EQ(f->tensor_bytes(), w.data_bytes());

  for (const std::string& p : {path, dir}) {  // the file itself, and its directory
    auto m = SafetensorsModel::open(p);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(m->size(), static_cast<size_t>(kDTypeCount) + 2);
    EXPECT_EQ(m->shard_count(), 1u);
    EXPECT_EQ(m->total_bytes(), w.data_bytes());
    expect_same_tensors(*m, w);
    // tensors() is sorted by name.
    for (size_t i = 1; i < m->tensors().size(); ++i) {
      EXPECT_LT(m->tensors()[i - 1]->name, m->tensors()[i]->name);
    }
    auto g = m->get("t.bf16");
    ASSERT_TRUE(g.ok());
    EXPECT_EQ((*g)->dtype, DType::bf16);
    m->advise(**g, AccessHint::willneed);
    auto missing = m->get("t.nope");
    expect_error(missing.status(), ErrorCode::not_found, {"t.nope", p});
  }
}

TEST(Safetensors, ReserializationIsByteIdentical) {
  SafetensorsWriter w = all_dtypes_writer();
  auto bytes = w.serialize();
  ASSERT_TRUE(bytes.ok());
  auto f = SafetensorsFile::parse(*bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  SafetensorsWriter again;
  for (const TensorView& t : f->tensors()) {
    ASSERT_TRUE(again.add(t.name, t.dtype, t.shape, t.bytes).ok());
  }
  for (const auto& [k, v] : f->metadata()) ASSERT_TRUE(again.set_metadata(k, v).ok());
  auto bytes2 = again.serialize();
  ASSERT_TRUE(bytes2.ok());
  EXPECT_EQ(*bytes, *bytes2);
}

TEST(Safetensors, WriterRoundTripSharded) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  SafetensorsWriter w = all_dtypes_writer();
  auto files = w.write_sharded(dir, 100);
  ASSERT_TRUE(files.ok()) << files.status().to_string();
  ASSERT_GT(files->size(), 2u);
  EXPECT_EQ((*files)[0], "model-00001-of-0000" + std::to_string(files->size()) + ".safetensors");

  for (const std::string& p : {dir, dir + "/model.safetensors.index.json"}) {
    auto m = SafetensorsModel::open(p);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(m->shard_count(), files->size());
    EXPECT_EQ(m->size(), static_cast<size_t>(kDTypeCount) + 2);
    EXPECT_EQ(m->total_bytes(), w.data_bytes());
    expect_same_tensors(*m, w);
    std::vector<bool> shard_used(m->shard_count());
    for (const TensorView* t : m->tensors()) {
      ASSERT_LT(t->shard, m->shard_count());
      shard_used[t->shard] = true;
      EXPECT_EQ(m->shard(t->shard).find(t->name), t);
      EXPECT_EQ(m->shard(t->shard).metadata().at("format"), "pt");
    }
    for (bool u : shard_used) EXPECT_TRUE(u);
  }
  auto text = read_file(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(text.ok());
  auto idx = parse_safetensors_index(*text, "index");
  ASSERT_TRUE(idx.ok()) << idx.status().to_string();
  EXPECT_EQ(idx->total_size, w.data_bytes());
  EXPECT_EQ(idx->shard_files, *files);
}

TEST(Safetensors, ModelSurvivesMove) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  SafetensorsWriter w = all_dtypes_writer();
  ASSERT_TRUE(w.write_sharded(dir, 64).ok());
  auto m = SafetensorsModel::open(dir);
  ASSERT_TRUE(m.ok());
  const TensorView* before = m->find("t.f32");
  SafetensorsModel moved = std::move(m).value();
  EXPECT_EQ(moved.find("t.f32"), before);
  expect_same_tensors(moved, w);
}

TEST(Safetensors, WriterRejectsBadInput) {
  SafetensorsWriter w;
  expect_error(w.add("a", DType::f32, {2}, iota_bytes(7)), ErrorCode::invalid_argument,
               {"\"a\"", "8 bytes", "got 7"});
  expect_error(w.add("__metadata__", DType::u8, {1}, iota_bytes(1)), ErrorCode::invalid_argument,
               {"reserved"});
  expect_error(w.add("bad\xff", DType::u8, {1}, iota_bytes(1)), ErrorCode::invalid_argument,
               {"UTF-8"});
  expect_error(w.add("odd", DType::f4_e2m1, {3}, iota_bytes(2)), ErrorCode::invalid_argument,
               {"odd", "f4_e2m1"});
  expect_error(w.add("neg", DType::u8, {-1}, {}), ErrorCode::invalid_argument, {"neg"});
  ASSERT_TRUE(w.add("a", DType::u8, {1}, iota_bytes(1)).ok());
  expect_error(w.add("a", DType::u8, {1}, iota_bytes(1)), ErrorCode::invalid_argument,
               {"duplicate", "\"a\""});
  expect_error(w.set_metadata("k", "\xc0\x80"), ErrorCode::invalid_argument, {"UTF-8"});
  EXPECT_EQ(w.size(), 1u);
}

TEST(Safetensors, Reinterpret) {
  SafetensorsWriter w;
  ASSERT_TRUE(w.add("experts.0.w1.weight", DType::i8, {4, 8}, iota_bytes(32)).ok());
  auto bytes = w.serialize();
  ASSERT_TRUE(bytes.ok());
  auto f = SafetensorsFile::parse(*bytes, "mem");
  ASSERT_TRUE(f.ok());
  const TensorView& t = f->tensors()[0];
  auto v = reinterpret(t, DType::f4_e2m1, {4, 16});
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->dtype, DType::f4_e2m1);
  EXPECT_EQ(v->elements(), 64);
  EXPECT_EQ(v->name, t.name);
  expect_error(reinterpret(t, DType::f4_e2m1, {4, 8}).status(), ErrorCode::invalid_argument,
               {"experts.0.w1.weight", "16 bytes"});
  expect_error(reinterpret(t, DType::f4_e2m1, {4, 15}).status(), ErrorCode::invalid_argument,
               {"experts.0.w1.weight"});
}

// ---- malformed single files -------------------------------------------------------------------

TEST(SafetensorsMalformed, FileShorterThan8Bytes) {
  expect_parse_error({}, ErrorCode::parse_error, {"too short"});
  expect_parse_error({1, 0, 0}, ErrorCode::parse_error, {"3 bytes"});
  // Also through open(): the message names the real path.
  TempDir tmp;
  const std::string& dir = tmp.path();
  write_text(dir + "/short.safetensors", "abc");
  auto r = SafetensorsFile::open(dir + "/short.safetensors");
  expect_error(r.status(), ErrorCode::parse_error, {dir + "/short.safetensors", "too short"});
  write_text(dir + "/empty.safetensors", "");
  auto e = SafetensorsFile::open(dir + "/empty.safetensors");
  expect_error(e.status(), ErrorCode::parse_error, {dir + "/empty.safetensors"});
}

TEST(SafetensorsMalformed, MissingFile) {
  auto r = SafetensorsFile::open("/nonexistent/dsv4/x.safetensors");
  expect_error(r.status(), ErrorCode::not_found, {"/nonexistent/dsv4/x.safetensors"});
}

TEST(SafetensorsMalformed, HeaderLengthPastEndOfFile) {
  expect_parse_error(raw_file("{}", 0, 100), ErrorCode::parse_error, {"past end of file", "100"});
  expect_parse_error(raw_file("{}", 0, 3), ErrorCode::parse_error, {"past end of file"});
}

TEST(SafetensorsMalformed, HeaderLengthAbsurd) {
  expect_parse_error(raw_file("{}", 0, uint64_t{1} << 63), ErrorCode::parse_error, {"limit"});
  expect_parse_error(raw_file("{}", 0, ~uint64_t{0}), ErrorCode::parse_error, {"limit"});
  expect_parse_error(raw_file("{}", 0, kMaxHeaderBytes + 1), ErrorCode::parse_error, {"limit"});
}

TEST(SafetensorsMalformed, HeaderNotUtf8) {
  expect_parse_error(raw_file("{\"a\xff\":1}", 0), ErrorCode::parse_error, {"UTF-8"});
  // Overlong encoding of '/' and an encoded surrogate.
  expect_parse_error(raw_file("{\"\xc0\xaf\":1}", 0), ErrorCode::parse_error, {"UTF-8"});
  expect_parse_error(raw_file("{\"\xed\xa0\x80\":1}", 0), ErrorCode::parse_error, {"UTF-8"});
  // Truncated multi-byte sequence at the end of the header.
  expect_parse_error(raw_file("{}\xe2\x82", 0), ErrorCode::parse_error, {"UTF-8"});
}

TEST(SafetensorsMalformed, HeaderNotJson) {
  for (const char* h : {"{\"a\": ", "{\"a\":{}", "", "{}}", "{'a':1}", "{} x", "{\"a\":nul}"}) {
    expect_parse_error(raw_file(h, 0), ErrorCode::parse_error, {"JSON"});
  }
  // A NUL byte ends nlohmann's input early; it must not hide trailing garbage.
  expect_parse_error(raw_file(std::string("{}\0", 3), 0), ErrorCode::parse_error, {"NUL"});
  expect_parse_error(raw_file(std::string("{}\0garbage", 10), 0), ErrorCode::parse_error, {"NUL"});
}

TEST(SafetensorsMalformed, HeaderNotAnObject) {
  for (const char* h : {"[]", "1", "\"x\"", "null", "true"}) {
    expect_parse_error(raw_file(h, 0), ErrorCode::parse_error, {"expected an object"});
  }
}

TEST(SafetensorsMalformed, NestingTooDeep) {
  std::string h = "{\"a\":" + std::string(200, '[') + std::string(200, ']') + "}";
  expect_parse_error(raw_file(h, 0), ErrorCode::parse_error, {"nested deeper"});
}

TEST(SafetensorsMalformed, EntryMissingField) {
  expect_parse_error(raw_file(R"({"w.x":{"shape":[1],"data_offsets":[0,1]}})", 1),
                     ErrorCode::parse_error, {"\"w.x\"", "missing \"dtype\""});
  expect_parse_error(raw_file(R"({"w.x":{"dtype":"U8","data_offsets":[0,1]}})", 1),
                     ErrorCode::parse_error, {"\"w.x\"", "missing \"shape\""});
  expect_parse_error(raw_file(R"({"w.x":{"dtype":"U8","shape":[1]}})", 1), ErrorCode::parse_error,
                     {"\"w.x\"", "missing \"data_offsets\""});
}

TEST(SafetensorsMalformed, EntryWrongJsonTypes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"w":5})", "expected an object"},
      {R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,1]}})", "\"dtype\" is a JSON number"},
      {R"({"w":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", "\"shape\" is a JSON string"},
      {R"({"w":{"dtype":"U8","shape":{},"data_offsets":[0,1]}})", "\"shape\" is a JSON object"},
      {R"({"w":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", "shape[0]"},
      {R"({"w":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}})", "shape[0]"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":{}}})", "data_offsets"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "an array of 1"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", "an array of 3"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":["0","1"]}})", "non-negative integers"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}})", "non-negative integers"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,1]}})", "non-negative integers"},
  };
  for (const auto& [h, needle] : cases) {
    SCOPED_TRACE(h);
    expect_parse_error(raw_file(h, 1), ErrorCode::parse_error, {"tensor \"w\"", needle});
  }
}

TEST(SafetensorsMalformed, NegativeOrNonIntegerDims) {
  for (const char* dim :
       {"-1", "2.5", "1.0", "1e3", "18446744073709551615", "9223372036854775808", "true", "null"}) {
    std::string h =
        std::string(R"({"w":{"dtype":"U8","shape":[)") + dim + R"(],"data_offsets":[0,1]}})";
    SCOPED_TRACE(h);
    expect_parse_error(raw_file(h, 1), ErrorCode::parse_error,
                       {"tensor \"w\"", "non-negative integer"});
  }
}

TEST(SafetensorsMalformed, NumberOutOfDoubleRange) {
  // nlohmann refuses numbers beyond double range while tokenizing: a JSON-level error.
  expect_parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[1e400],"data_offsets":[0,1]}})", 1),
                     ErrorCode::parse_error, {"JSON"});
}

TEST(SafetensorsMalformed, ShapeProductOverflow) {
  expect_parse_error(
      raw_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,1]}})", 1),
      ErrorCode::parse_error, {"tensor \"w\"", "overflow"});
  // Elements fit in int64, bytes do not.
  expect_parse_error(
      raw_file(R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,1]}})", 1),
      ErrorCode::parse_error, {"tensor \"w\"", "overflow"});
  std::string deep = R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],)"
                     R"("data_offsets":[0,1]}})";
  expect_parse_error(raw_file(deep, 1), ErrorCode::parse_error, {"tensor \"w\"", "rank 17"});
}

TEST(SafetensorsMalformed, UnknownDtype) {
  for (const char* dt : {"F128", "f32", "FP4", "E8M0", ""}) {
    std::string h =
        std::string(R"({"w.q":{"dtype":")") + dt + R"(","shape":[1],"data_offsets":[0,1]}})";
    SCOPED_TRACE(h);
    expect_parse_error(raw_file(h, 1), ErrorCode::unsupported, {"tensor \"w.q\"", "unknown dtype"});
  }
}

TEST(SafetensorsMalformed, PackedDimNotByteAligned) {
  expect_parse_error(raw_file(R"({"e.w":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}})", 3),
                     ErrorCode::parse_error, {"tensor \"e.w\"", "f4_e2m1"});
  expect_parse_error(raw_file(R"({"e.w":{"dtype":"F4","shape":[],"data_offsets":[0,1]}})", 1),
                     ErrorCode::parse_error, {"tensor \"e.w\"", "scalar"});
}

TEST(SafetensorsMalformed, OffsetsEndBeforeBegin) {
  expect_parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", 4),
                     ErrorCode::parse_error, {"tensor \"w\"", "end before begin"});
}

TEST(SafetensorsMalformed, OffsetsOutOfRange) {
  expect_parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                     ErrorCode::parse_error, {"tensor \"w\"", "out of range", "8 bytes"});
  expect_parse_error(
      raw_file(
          R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[9223372036854775807,9223372036854775807]}})",
          0),
      ErrorCode::parse_error, {"tensor \"w\"", "out of range"});
}

TEST(SafetensorsMalformed, ShapeTimesDtypeNotByteLength) {
  expect_parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4),
                     ErrorCode::parse_error, {"tensor \"w\"", "8 bytes", "span 4"});
  expect_parse_error(raw_file(R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})", 16),
                     ErrorCode::parse_error, {"tensor \"w\"", "8 bytes"});
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  expect_parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              12),
                     ErrorCode::parse_error, {"tensor \"b\"", "overlap", "\"a\""});
  // Two tensors on the very same bytes.
  expect_parse_error(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                              4),
                     ErrorCode::parse_error, {"overlap", "\"a\"", "\"b\""});
}

TEST(SafetensorsMalformed, GapsAndTrailingBytes) {
  expect_parse_error(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                              12),
                     ErrorCode::parse_error, {"tensor \"b\"", "gap of 4"});
  expect_parse_error(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 6),
                     ErrorCode::parse_error, {"2 trailing bytes", "\"a\""});
  expect_parse_error(raw_file("{}", 3), ErrorCode::parse_error, {"3 trailing bytes"});
}

TEST(SafetensorsMalformed, DuplicateTensorNames) {
  expect_parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                              2),
                     ErrorCode::parse_error, {"duplicate tensor name \"w\""});
  // Same name spelled with and without a \u escape is the same name.
  expect_parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("\u0077":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                              2),
                     ErrorCode::parse_error, {"duplicate tensor name \"w\""});
  // Duplicate keys inside an entry are rejected too (json::parse would keep the last one).
  expect_parse_error(
      raw_file(R"({"w":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", 1),
      ErrorCode::parse_error, {"duplicate key \"dtype\"", "/w"});
}

TEST(SafetensorsMalformed, BadMetadata) {
  expect_parse_error(raw_file(R"({"__metadata__":[1]})", 0), ErrorCode::parse_error,
                     {"__metadata__", "expected an object"});
  expect_parse_error(raw_file(R"({"__metadata__":{"format":1}})", 0), ErrorCode::parse_error,
                     {"__metadata__", "\"format\"", "expected a string"});
}

TEST(SafetensorsMalformed, HostileNameIsQuotedAndCut) {
  std::string h = R"({")" + std::string("xxx\\n") + std::string(996, 'x') +
                  R"(":{"dtype":"U8","shape":[2],"data_offsets":[0,1]}})";
  auto r = SafetensorsFile::parse(raw_file(h, 1), kSrc);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("xxx\\x0a"), std::string::npos) << r.status().message();
  EXPECT_LT(r.status().message().size(), 400u);
}

// ---- malformed sharded checkpoints --------------------------------------------------------------

// Writes shard `file` in `dir` holding U8 [1] tensors with the given names.
void write_shard(const std::string& dir, const std::string& file,
                 const std::vector<std::string>& names) {
  SafetensorsWriter w;
  for (const auto& n : names) ASSERT_TRUE(w.add(n, DType::u8, {1}, iota_bytes(1)).ok());
  ASSERT_TRUE(w.write(dir + "/" + file).ok());
}

void write_index(const std::string& dir, const std::string& weight_map_json) {
  write_text(dir + "/model.safetensors.index.json",
             R"({"metadata":{"total_size":2},"weight_map":)" + weight_map_json + "}");
}

TEST(SafetensorsIndex, MissingShard) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  write_shard(dir, "s1.safetensors", {"a"});
  write_index(dir, R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  auto m = SafetensorsModel::open(dir);
  expect_error(m.status(), ErrorCode::not_found,
               {dir + "/model.safetensors.index.json", "\"s2.safetensors\"", "\"b\""});
}

TEST(SafetensorsIndex, TensorNotInItsShard) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  write_shard(dir, "s1.safetensors", {"a"});
  write_shard(dir, "s2.safetensors", {"b"});
  write_index(dir, R"({"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"})");
  auto m = SafetensorsModel::open(dir);
  expect_error(m.status(), ErrorCode::not_found,
               {"model.safetensors.index.json", "tensor \"c\"", "\"s2.safetensors\""});
}

TEST(SafetensorsIndex, PathEscapingTheDirectory) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  fs::create_directories(dir + "/sub");
  write_shard(dir, "s1.safetensors", {"a"});
  write_shard(dir, "sub/s2.safetensors", {"b"});
  for (const std::string& bad :
       {std::string("../s1.safetensors"), std::string("/etc/passwd"), std::string(".."),
        std::string("sub/s2.safetensors"), std::string("..\\\\s1.safetensors"), std::string("")}) {
    SCOPED_TRACE(bad);
    write_index(dir, R"({"a":"s1.safetensors","b":")" + bad + R"("})");
    auto m = SafetensorsModel::open(dir);
    expect_error(m.status(), ErrorCode::parse_error,
                 {"model.safetensors.index.json", "tensor \"b\"", "plain file name"});
  }
}

TEST(SafetensorsIndex, DuplicateAcrossShards) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  write_shard(dir, "s1.safetensors", {"a", "b"});
  write_shard(dir, "s2.safetensors", {"b", "c"});
  write_index(dir, R"({"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"})");
  auto m = SafetensorsModel::open(dir);
  expect_error(m.status(), ErrorCode::parse_error,
               {"duplicate tensor \"b\"", "s1.safetensors", "s2.safetensors"});
}

TEST(SafetensorsIndex, TensorMissingFromIndex) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  write_shard(dir, "s1.safetensors", {"a", "extra"});
  write_index(dir, R"({"a":"s1.safetensors"})");
  auto m = SafetensorsModel::open(dir);
  expect_error(m.status(), ErrorCode::parse_error, {"\"extra\"", "s1.safetensors", "stale"});
}

TEST(SafetensorsIndex, DuplicateKeyInWeightMap) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  write_shard(dir, "s1.safetensors", {"a"});
  write_index(dir, R"({"a":"s1.safetensors","a":"s1.safetensors"})");
  auto m = SafetensorsModel::open(dir);
  expect_error(m.status(), ErrorCode::parse_error,
               {"model.safetensors.index.json", "duplicate key \"a\"", "weight_map"});
}

TEST(SafetensorsIndex, MalformedIndexJson) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[]", "expected an object"},
      {"{}", "missing \"weight_map\""},
      {R"({"weight_map":[]})", "\"weight_map\" is a JSON array"},
      {R"({"weight_map":{"a":1}})", "tensor \"a\" is a JSON number"},
      {R"({"weight_map":{"a":"s1.safetensors"})", "invalid JSON"},
      {"{\"weight_map\":{\"a\xff\":\"s\"}}", "UTF-8"},
  };
  for (const auto& [text, needle] : cases) {
    SCOPED_TRACE(text);
    auto r = parse_safetensors_index(text, "/m/model.safetensors.index.json");
    expect_error(r.status(), ErrorCode::parse_error, {"/m/model.safetensors.index.json", needle});
  }
}

TEST(SafetensorsIndex, OpenErrors) {
  expect_error(SafetensorsModel::open("/nonexistent/dsv4/ckpt").status(), ErrorCode::not_found,
               {"/nonexistent/dsv4/ckpt"});
  TempDir tmp;
  const std::string& dir = tmp.path();
  expect_error(SafetensorsModel::open(dir).status(), ErrorCode::not_found,
               {dir, "model.safetensors.index.json"});
  // A malformed shard reports the shard path and the index.
  write_text(dir + "/s1.safetensors", "xy");
  write_index(dir, R"({"a":"s1.safetensors"})");
  expect_error(SafetensorsModel::open(dir).status(), ErrorCode::parse_error,
               {"model.safetensors.index.json", dir + "/s1.safetensors", "too short"});
}

}  // namespace
}  // namespace dsv4::formats
