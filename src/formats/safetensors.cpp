#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

namespace dsv4::formats {

namespace {

using json = nlohmann::json;

// Quotes a name for an error message: control characters escaped, long names cut (at a UTF-8
// character boundary) so a hostile header cannot make a megabyte-long message.
std::string quote_name(std::string_view s) {
  constexpr size_t kMax = 160;
  bool cut = false;
  if (s.size() > kMax) {
    size_t n = kMax;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
    cut = true;
  }
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  out += cut ? "\"..." : "\"";
  return out;
}

// Builds a nlohmann DOM from SAX events, rejecting what json::parse would let through
// silently: duplicate object keys (at any depth) and pathological nesting. Never throws
// except std::bad_alloc.
class StrictDomBuilder {
 public:
  explicit StrictDomBuilder(size_t max_depth) : max_depth_(max_depth) {}

  bool null() { return add(json(nullptr)); }
  bool boolean(bool v) { return add(json(v)); }
  bool number_integer(json::number_integer_t v) { return add(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return add(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) { return add(json(v)); }
  bool string(json::string_t& v) { return add(json(std::move(v))); }
  bool binary(json::binary_t& v) { return add(json::binary(std::move(v))); }

  bool start_object(std::size_t /*n*/) { return open(json::object()); }
  bool start_array(std::size_t /*n*/) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    json& obj = *stack_.back().value;
    if (obj.contains(k)) {
      error_ = "duplicate key " + quote_name(k) + where();
      duplicate_key_ = k;
      duplicate_depth_ = stack_.size();
      return false;
    }
    pending_key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    std::string what = ex.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; keep the human part.
    if (auto p = what.find("] "); p != std::string::npos && what.rfind("[json.", 0) == 0) {
      what = what.substr(p + 2);
    }
    error_ = "invalid JSON near byte " + std::to_string(position) + ": " + what;
    return false;
  }

  json& root() { return root_; }
  const std::string& error() const { return error_; }
  // Set when parsing stopped on a duplicate key; depth 1 = a key of the root object.
  const std::optional<std::string>& duplicate_key() const { return duplicate_key_; }
  size_t duplicate_depth() const { return duplicate_depth_; }

 private:
  struct Open {
    json* value;
    std::string name;  // key (or "[i]") under which this container sits; "" for the root
  };

  // " in /weight_map" for nested objects; "" at the top level.
  std::string where() const {
    if (stack_.size() <= 1) return "";
    std::string path;
    for (size_t i = 1; i < stack_.size(); ++i) path += "/" + stack_[i].name;
    return " in " + quote_name(path);
  }

  // Inserts v into the innermost open container (or as the root) and returns its address.
  // Addresses of open containers stay valid: only the innermost one is ever modified.
  json* insert(json v, std::string* name) {
    if (stack_.empty()) {
      root_ = std::move(v);
      *name = "";
      return &root_;
    }
    json& parent = *stack_.back().value;
    if (parent.is_array()) {
      *name = "[" + std::to_string(parent.size()) + "]";
      parent.push_back(std::move(v));
      return &parent.back();
    }
    *name = pending_key_;
    json& slot = parent[pending_key_];
    slot = std::move(v);
    return &slot;
  }
  bool add(json v) {
    std::string name;
    insert(std::move(v), &name);
    return true;
  }
  bool open(json v) {
    if (stack_.size() >= max_depth_) {
      error_ = "JSON nested deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    std::string name;
    json* p = insert(std::move(v), &name);
    stack_.push_back({p, std::move(name)});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  size_t max_depth_;
  json root_;
  std::vector<Open> stack_;
  std::string pending_key_;
  std::string error_;
  std::optional<std::string> duplicate_key_;
  size_t duplicate_depth_ = 0;
};

// Parses `text` strictly. On failure *dup_top_level is set if the problem is a duplicate key
// of the root object (callers name it as a duplicate tensor).
struct StrictParse {
  json value;
  std::string error;  // empty on success
  std::optional<std::string> duplicate_top_level_key;
};

StrictParse parse_json_strict(std::string_view text) {
  StrictParse out;
  // nlohmann treats a NUL byte as the end of input and would ignore whatever follows; JSON
  // text never contains a raw NUL, so refuse it up front.
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    out.error = "invalid JSON: NUL byte at offset " + std::to_string(nul);
    return out;
  }
  StrictDomBuilder builder(kMaxJsonDepth);
  bool ok = false;
  try {
    ok = json::sax_parse(text.data(), text.data() + text.size(), &builder,
                         json::input_format_t::json, /*strict=*/true,
                         /*ignore_comments=*/false);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {  // not expected from the SAX path; keep it contained
    out.error = std::string("invalid JSON: ") + e.what();
    return out;
  }
  if (!ok) {
    out.error = builder.error().empty() ? "invalid JSON" : builder.error();
    if (builder.duplicate_key() && builder.duplicate_depth() == 1) {
      out.duplicate_top_level_key = builder.duplicate_key();
    }
    return out;
  }
  out.value = std::move(builder.root());
  return out;
}

// A JSON number that is an integer in [0, 2^63): dims and offsets.
std::optional<int64_t> as_nonneg_int64(const json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<json::number_unsigned_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    auto i = v.get<json::number_integer_t>();
    if (i < 0) return std::nullopt;
    return static_cast<int64_t>(i);
  }
  return std::nullopt;
}

const char* json_type(const json& v) {
  return v.type_name();
}

struct Entry {
  TensorView view;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Parses one tensor entry of the header into *e (without the byte span).
Status parse_entry(const std::string& where, const json& v, uint64_t data_size, Entry* e) {
  if (!v.is_object()) {
    return parse_error(where + ": entry is a JSON " + json_type(v) + ", expected an object");
  }
  auto dt = v.find("dtype");
  auto sh = v.find("shape");
  auto off = v.find("data_offsets");
  if (dt == v.end()) return parse_error(where + ": missing \"dtype\"");
  if (sh == v.end()) return parse_error(where + ": missing \"shape\"");
  if (off == v.end()) return parse_error(where + ": missing \"data_offsets\"");
  if (!dt->is_string()) {
    return parse_error(where + ": \"dtype\" is a JSON " + json_type(*dt) + ", expected a string");
  }
  const auto& dts = dt->get_ref<const std::string&>();
  auto dtype = dtype_from_safetensors(dts);
  if (!dtype) return unsupported(where + ": unknown dtype " + quote_name(dts));
  e->view.dtype = *dtype;

  if (!sh->is_array()) {
    return parse_error(where + ": \"shape\" is a JSON " + json_type(*sh) + ", expected an array");
  }
  if (sh->size() > kMaxRank) {
    return parse_error(where + ": shape has rank " + std::to_string(sh->size()) + ", at most " +
                       std::to_string(kMaxRank) + " supported");
  }
  e->view.shape.reserve(sh->size());
  for (size_t i = 0; i < sh->size(); ++i) {
    const json& d = (*sh)[i];
    auto n = as_nonneg_int64(d);
    if (!n) {
      std::string got = d.is_number() ? d.dump() : std::string("a JSON ") + json_type(d);
      return parse_error(where + ": shape[" + std::to_string(i) + "] is " + got +
                         ", expected a non-negative integer");
    }
    e->view.shape.push_back(*n);
  }
  auto nbytes = dtype_bytes(*dtype, e->view.shape);
  if (!nbytes.ok()) return parse_error(where + ": " + nbytes.status().message());

  if (!off->is_array() || off->size() != 2) {
    std::string got = off->is_array() ? "an array of " + std::to_string(off->size())
                                      : std::string("a JSON ") + json_type(*off);
    return parse_error(where + ": \"data_offsets\" is " + got + ", expected [begin, end]");
  }
  auto b = as_nonneg_int64((*off)[0]);
  auto en = as_nonneg_int64((*off)[1]);
  if (!b || !en) {
    return parse_error(where + ": \"data_offsets\" " + off->dump() +
                       " must hold two non-negative integers");
  }
  e->begin = static_cast<uint64_t>(*b);
  e->end = static_cast<uint64_t>(*en);
  if (e->end < e->begin) {
    return parse_error(where + ": data_offsets [" + std::to_string(e->begin) + ", " +
                       std::to_string(e->end) + "] end before begin");
  }
  if (e->end > data_size) {
    return parse_error(where + ": data_offsets [" + std::to_string(e->begin) + ", " +
                       std::to_string(e->end) + "] out of range: the data area holds " +
                       std::to_string(data_size) + " bytes");
  }
  if (e->end - e->begin != static_cast<uint64_t>(*nbytes)) {
    return parse_error(where + ": shape " + shape_string(e->view.shape) + " x " + dts + " is " +
                       std::to_string(*nbytes) + " bytes but data_offsets [" +
                       std::to_string(e->begin) + ", " + std::to_string(e->end) + "] span " +
                       std::to_string(e->end - e->begin));
  }
  return ok_status();
}

std::string tensor_where(const std::string& source, std::string_view name) {
  return source + ": tensor " + quote_name(name);
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte, overlong 2-byte lead (C0/C1) or > U+10FFFF lead
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = p[i + k];
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;  // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;                            // surrogate
    if (cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

int64_t TensorView::elements() const {
  auto n = shape_elements(shape);
  DSV4_CHECK(n.ok());
  return *n;
}

bool TensorView::is_aligned(size_t alignment) const {
  DSV4_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0);
  return reinterpret_cast<uintptr_t>(bytes.data()) % alignment == 0;
}

Result<TensorView> reinterpret(const TensorView& t, DType dtype, std::vector<int64_t> shape) {
  auto nbytes = dtype_bytes(dtype, shape);
  if (!nbytes.ok()) {
    return invalid_argument("tensor " + quote_name(t.name) + ": cannot view as " +
                            std::string(dtype_name(dtype)) + ": " + nbytes.status().message());
  }
  if (static_cast<uint64_t>(*nbytes) != t.bytes.size()) {
    return invalid_argument("tensor " + quote_name(t.name) + " (" +
                            std::string(dtype_name(t.dtype)) + " " + shape_string(t.shape) + ", " +
                            std::to_string(t.bytes.size()) + " bytes) cannot be viewed as " +
                            std::string(dtype_name(dtype)) + " " + shape_string(shape) + " (" +
                            std::to_string(*nbytes) + " bytes)");
  }
  TensorView v = t;
  v.dtype = dtype;
  v.shape = std::move(shape);
  return v;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

Result<SafetensorsFile> SafetensorsFile::parse(std::span<const uint8_t> file,
                                               std::string source_name) {
  const std::string& src = source_name;
  if (file.size() < 8) {
    return parse_error(src + ": file is " + std::to_string(file.size()) +
                       " bytes, too short for the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[static_cast<size_t>(i)];
  if (n > kMaxHeaderBytes) {
    return parse_error(src + ": header length " + std::to_string(n) + " exceeds the " +
                       std::to_string(kMaxHeaderBytes) + "-byte limit (corrupt file?)");
  }
  if (n > file.size() - 8) {
    return parse_error(src + ": header length " + std::to_string(n) + " past end of file (size " +
                       std::to_string(file.size()) + ")");
  }
  std::string_view header(reinterpret_cast<const char*>(file.data()) + 8, static_cast<size_t>(n));
  if (!is_valid_utf8(header)) return parse_error(src + ": header is not valid UTF-8");

  StrictParse parsed = parse_json_strict(header);
  if (!parsed.error.empty()) {
    if (parsed.duplicate_top_level_key) {
      return parse_error(src + ": duplicate tensor name " +
                         quote_name(*parsed.duplicate_top_level_key) + " in header");
    }
    return parse_error(src + ": header: " + parsed.error);
  }
  const json& root = parsed.value;
  if (!root.is_object()) {
    return parse_error(src + ": header is a JSON " + json_type(root) + ", expected an object");
  }

  SafetensorsFile f;
  f.path_ = std::move(source_name);
  f.file_ = file;
  f.data_offset_ = 8 + n;
  const uint64_t data_size = file.size() - f.data_offset_;

  std::vector<Entry> entries;
  entries.reserve(root.size());
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") {
      if (!it->is_object()) {
        return parse_error(f.path_ + ": \"__metadata__\" is a JSON " + json_type(*it) +
                           ", expected an object of strings");
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return parse_error(f.path_ + ": \"__metadata__\" value for " + quote_name(m.key()) +
                             " is a JSON " + json_type(*m) + ", expected a string");
        }
        f.metadata_.emplace(m.key(), m->get<std::string>());
      }
      continue;
    }
    Entry e;
    e.view.name = key;
    DSV4_RETURN_IF_ERROR(parse_entry(tensor_where(f.path_, key), *it, data_size, &e));
    entries.push_back(std::move(e));
  }

  // The tensors must tile [0, data_size) exactly (tensor.rs Metadata::validate).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.view.name < b.view.name;
  });
  uint64_t pos = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < pos) {
      return parse_error(tensor_where(f.path_, e.view.name) + ": data_offsets [" +
                         std::to_string(e.begin) + ", " + std::to_string(e.end) +
                         "] overlap tensor " + quote_name(entries[i - 1].view.name) + " [" +
                         std::to_string(entries[i - 1].begin) + ", " +
                         std::to_string(entries[i - 1].end) + "]");
    }
    if (e.begin > pos) {
      return parse_error(tensor_where(f.path_, e.view.name) + ": gap of " +
                         std::to_string(e.begin - pos) + " unclaimed bytes before data_offsets [" +
                         std::to_string(e.begin) + ", " + std::to_string(e.end) + "]");
    }
    pos = e.end;
  }
  if (pos != data_size) {
    std::string last = entries.empty() ? std::string("the header")
                                       : "tensor " + quote_name(entries.back().view.name);
    return parse_error(f.path_ + ": " + std::to_string(data_size - pos) + " trailing bytes after " +
                       last + " (data area is " + std::to_string(data_size) +
                       " bytes, tensors cover " + std::to_string(pos) + ")");
  }

  f.tensors_.reserve(entries.size());
  for (Entry& e : entries) {
    e.view.file_offset = f.data_offset_ + e.begin;
    e.view.bytes =
        file.subspan(static_cast<size_t>(e.view.file_offset), static_cast<size_t>(e.end - e.begin));
    f.tensors_.push_back(std::move(e.view));
  }
  // Keys view the names inside tensors_, which no longer reallocates.
  f.by_name_.reserve(f.tensors_.size());
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    f.by_name_.emplace(f.tensors_[i].name, static_cast<uint32_t>(i));
  }
  return f;
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  DSV4_ASSIGN_OR_RETURN(MmapFile map, MmapFile::open(path));
  DSV4_ASSIGN_OR_RETURN(SafetensorsFile f, parse(map.bytes(), path));
  f.map_ = std::move(map);  // the mapping (and so every span) stays where it is
  return f;
}

const TensorView* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::advise(const TensorView& t, AccessHint hint) const {
  map_.advise(hint, static_cast<size_t>(t.file_offset), t.bytes.size());
}

// ---------------------------------------------------------------------------------------------
// Index

Result<SafetensorsIndex> parse_safetensors_index(std::string_view json_text,
                                                 const std::string& source_name) {
  const std::string& src = source_name;
  if (!is_valid_utf8(json_text)) return parse_error(src + ": not valid UTF-8");
  StrictParse parsed = parse_json_strict(json_text);
  if (!parsed.error.empty()) return parse_error(src + ": " + parsed.error);
  const json& root = parsed.value;
  if (!root.is_object()) {
    return parse_error(src + ": index is a JSON " + json_type(root) + ", expected an object");
  }
  auto wm = root.find("weight_map");
  if (wm == root.end()) return parse_error(src + ": missing \"weight_map\"");
  if (!wm->is_object()) {
    return parse_error(src + ": \"weight_map\" is a JSON " + json_type(*wm) +
                       ", expected an object");
  }
  SafetensorsIndex idx;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string where = src + ": weight_map entry for tensor " + quote_name(it.key());
    if (!it->is_string()) {
      return parse_error(where + " is a JSON " + json_type(*it) + ", expected a file name");
    }
    const auto& file = it->get_ref<const std::string&>();
    // Only plain names inside the checkpoint directory: no separators, no "." / "..", no NUL.
    if (file.empty() || file == "." || file == ".." ||
        file.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
      return parse_error(where + ": shard " + quote_name(file) +
                         " is not a plain file name inside the checkpoint directory");
    }
    idx.weight_map.emplace(it.key(), file);
    idx.shard_files.push_back(file);
  }
  std::sort(idx.shard_files.begin(), idx.shard_files.end());
  idx.shard_files.erase(std::unique(idx.shard_files.begin(), idx.shard_files.end()),
                        idx.shard_files.end());
  if (auto md = root.find("metadata"); md != root.end() && md->is_object()) {
    if (auto ts = md->find("total_size"); ts != md->end()) {
      if (auto v = as_nonneg_int64(*ts)) idx.total_size = static_cast<uint64_t>(*v);
    }
  }
  return idx;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsModel

void SafetensorsModel::build_lookup() {
  sorted_.clear();
  by_name_.clear();
  total_bytes_ = 0;
  for (const auto& s : shards_) {
    for (const TensorView& t : s->tensors()) {
      sorted_.push_back(&t);
      total_bytes_ += t.bytes.size();
    }
  }
  std::sort(sorted_.begin(), sorted_.end(),
            [](const TensorView* a, const TensorView* b) { return a->name < b->name; });
  by_name_.reserve(sorted_.size());
  for (const TensorView* t : sorted_) by_name_.emplace(t->name, t);
}

Result<SafetensorsModel> SafetensorsModel::open_single(const std::string& file) {
  DSV4_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(file));
  SafetensorsModel m;
  m.path_ = file;
  m.shards_.push_back(std::make_unique<SafetensorsFile>(std::move(f)));
  m.build_lookup();
  return m;
}

Result<SafetensorsModel> SafetensorsModel::open_index(const std::string& index_path) {
  namespace fs = std::filesystem;
  DSV4_ASSIGN_OR_RETURN(std::string text, read_file(index_path));
  DSV4_ASSIGN_OR_RETURN(SafetensorsIndex idx, parse_safetensors_index(text, index_path));
  const fs::path dir = fs::path(index_path).parent_path();

  SafetensorsModel m;
  m.path_ = index_path;
  std::map<std::string, uint32_t> shard_of_file;
  for (const std::string& name : idx.shard_files) {
    // Name one tensor that points at this shard so a missing file is easy to trace.
    std::string some_tensor;
    for (const auto& [t, f] : idx.weight_map) {
      if (f == name) {
        some_tensor = t;
        break;
      }
    }
    auto f = SafetensorsFile::open((dir / name).string());
    if (!f.ok()) {
      return f.status().with_context(index_path + ": shard " + quote_name(name) +
                                     " (holding tensor " + quote_name(some_tensor) + ")");
    }
    const auto shard = static_cast<uint32_t>(m.shards_.size());
    for (TensorView& t : f->tensors_) t.shard = shard;
    shard_of_file.emplace(name, shard);
    m.shards_.push_back(std::make_unique<SafetensorsFile>(std::move(f).value()));
  }

  // Every mapped tensor is in its shard.
  for (const auto& [tensor, file] : idx.weight_map) {
    const SafetensorsFile& s = *m.shards_[shard_of_file.at(file)];
    if (s.find(tensor) == nullptr) {
      return not_found(index_path + ": tensor " + quote_name(tensor) + " is mapped to shard " +
                       quote_name(file) + ", which does not contain it");
    }
  }
  // No tensor in two shards, and no tensor the index does not list.
  std::unordered_map<std::string_view, uint32_t> seen;
  for (uint32_t i = 0; i < m.shards_.size(); ++i) {
    for (const TensorView& t : m.shards_[i]->tensors()) {
      auto [it, inserted] = seen.emplace(t.name, i);
      if (!inserted) {
        return parse_error(index_path + ": duplicate tensor " + quote_name(t.name) + " in shards " +
                           quote_name(m.shards_[it->second]->path()) + " and " +
                           quote_name(m.shards_[i]->path()));
      }
    }
  }
  for (uint32_t i = 0; i < m.shards_.size(); ++i) {
    for (const TensorView& t : m.shards_[i]->tensors()) {
      if (idx.weight_map.find(t.name) == idx.weight_map.end()) {
        return parse_error(index_path + ": shard " + quote_name(m.shards_[i]->path()) +
                           " holds tensor " + quote_name(t.name) +
                           " that the weight_map does not list (stale index?)");
      }
    }
  }
  m.build_lookup();
  return m;
}

Result<SafetensorsModel> SafetensorsModel::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return io_error(path + ": cannot stat: " + ec.message());
    }
    return not_found(path + ": no such file or directory");
  }
  if (fs::is_directory(st)) {
    const fs::path dir(path);
    const std::string single = (dir / std::string(kSingleFileName)).string();
    const std::string index = (dir / std::string(kIndexFileName)).string();
    if (fs::exists(single, ec)) return open_single(single);
    if (fs::exists(index, ec)) return open_index(index);
    return not_found(path + ": directory holds neither " + std::string(kSingleFileName) + " nor " +
                     std::string(kIndexFileName));
  }
  const std::string name = fs::path(path).filename().string();
  if (name.size() >= 11 && name.compare(name.size() - 11, 11, ".index.json") == 0) {
    return open_index(path);
  }
  return open_single(path);
}

const TensorView* SafetensorsModel::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

Result<const TensorView*> SafetensorsModel::get(std::string_view name) const {
  const TensorView* t = find(name);
  if (t == nullptr) return not_found(path_ + ": no tensor named " + quote_name(name));
  return t;
}

}  // namespace dsv4::formats
