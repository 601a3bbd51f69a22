#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/mmap_file.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {

using Json = nlohmann::json;

struct Tokenizer::Impl {
  std::string origin;
  BpeModel bpe;
  std::vector<AddedToken> added;  // file order; AddedVocab points into it (Impl never moves)
  AddedVocab added_vocab;
  PreTokenizer pre;
  StringMap added_by_content;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::vector<std::string> id_bytes;  // decode bytes of each id
  std::vector<uint8_t> id_flags;      // kExists | kSpecial
  int32_t vocab_size = 0;
  std::optional<int32_t> bos, eos;

  static constexpr uint8_t kExists = 1, kSpecial = 2;

  Status encode_valid(std::string_view text, AddedTokens match, PreTokenizer::Scratch& ps,
                      BpeModel::Scratch& bs, std::vector<AddedVocab::Segment>& segs,
                      std::vector<int32_t>* out) const;
  Status decode_into(std::span<const int32_t> ids, bool skip_special, std::string* out) const;
};

namespace {

// ---- JSON helpers: every error names the origin and the field path. ----

Status field_error(std::string_view origin, std::string_view field, std::string_view what) {
  return parse_error(fmt::format("{}: {}: {}", origin, field, what));
}

Status unsupported_field(std::string_view origin, std::string_view field, std::string_view what) {
  return unsupported(fmt::format("{}: {}: {}", origin, field, what));
}

const Json* member(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

Result<bool> get_bool(const Json& obj, const char* key, bool def, std::string_view origin,
                      const std::string& path) {
  const Json* v = member(obj, key);
  if (!v || v->is_null()) return def;
  if (!v->is_boolean()) return field_error(origin, path + "." + key, "expected true or false");
  return v->get<bool>();
}

Result<std::optional<std::string>> get_opt_string(const Json& obj, const char* key,
                                                  std::string_view origin,
                                                  const std::string& path) {
  const Json* v = member(obj, key);
  if (!v || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) return field_error(origin, path + "." + key, "expected a string or null");
  return std::optional<std::string>(v->get<std::string>());
}

Result<std::string> get_type(const Json& obj, std::string_view origin, const std::string& path) {
  if (!obj.is_object()) return field_error(origin, path, "expected an object");
  const Json* t = member(obj, "type");
  if (!t || !t->is_string()) return field_error(origin, path + ".type", "missing or not a string");
  return t->get<std::string>();
}

// Only identity normalizers are supported: null or (nested) empty Sequences.
Status check_normalizer(const Json& n, std::string_view origin, const std::string& path) {
  if (n.is_null()) return ok_status();
  DSV4_ASSIGN_OR_RETURN(std::string type, get_type(n, origin, path));
  if (type != "Sequence") {
    return unsupported_field(origin, path + ".type",
                             fmt::format("normalizer '{}' is not supported (only identity)", type));
  }
  const Json* list = member(n, "normalizers");
  if (!list || !list->is_array())
    return field_error(origin, path + ".normalizers", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    DSV4_RETURN_IF_ERROR(
        check_normalizer((*list)[i], origin, fmt::format("{}.normalizers[{}]", path, i)));
  }
  return ok_status();
}

Result<SplitBehavior> parse_behavior(const Json& v, std::string_view origin,
                                     const std::string& path) {
  if (!v.is_string()) return field_error(origin, path, "expected a string");
  const std::string s = v.get<std::string>();
  if (s == "Removed") return SplitBehavior::removed;
  if (s == "Isolated") return SplitBehavior::isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (s == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (s == "Contiguous") return SplitBehavior::contiguous;
  return field_error(origin, path, fmt::format("unknown split behavior '{}'", s));
}

// Appends the steps of one pre-tokenizer; `byte_level_seen` enforces "ByteLevel comes last".
Status add_pre_tokenizer(const Json& p, std::string_view origin, const std::string& path,
                         PreTokenizer* pre, bool* byte_level_seen) {
  DSV4_ASSIGN_OR_RETURN(std::string type, get_type(p, origin, path));
  if (*byte_level_seen) {
    return unsupported_field(origin, path,
                             "pre-tokenizers after ByteLevel are not supported (ByteLevel must "
                             "be the last step)");
  }
  if (type == "Sequence") {
    const Json* list = member(p, "pretokenizers");
    if (!list || !list->is_array()) {
      return field_error(origin, path + ".pretokenizers", "expected an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      DSV4_RETURN_IF_ERROR(add_pre_tokenizer(
          (*list)[i], origin, fmt::format("{}.pretokenizers[{}]", path, i), pre, byte_level_seen));
    }
    return ok_status();
  }
  if (type == "Split") {
    const Json* pat = member(p, "pattern");
    if (!pat || !pat->is_object())
      return field_error(origin, path + ".pattern", "expected an object");
    PreTokenizerStep step;
    const Json* re = member(*pat, "Regex");
    const Json* lit = member(*pat, "String");
    if ((re && re->is_string()) || (lit && lit->is_string())) {
      const bool literal = !(re && re->is_string());
      const std::string text = (literal ? lit : re)->get<std::string>();
      for (bool widen : {true, false}) {
        auto r = Regex::compile(text, literal, widen);
        if (!r.ok()) {
          return Status(r.status().code(),
                        fmt::format("{}: {}.pattern.{}: {}", origin, path,
                                    literal ? "String" : "Regex", r.status().message()));
        }
        (widen ? step.regex : step.regex_fast) = std::move(r).value();
      }
    } else {
      return field_error(origin, path + ".pattern", "expected {\"Regex\": ..} or {\"String\": ..}");
    }
    const Json* beh = member(p, "behavior");
    if (!beh) return field_error(origin, path + ".behavior", "missing");
    DSV4_ASSIGN_OR_RETURN(step.behavior, parse_behavior(*beh, origin, path + ".behavior"));
    DSV4_ASSIGN_OR_RETURN(step.invert, get_bool(p, "invert", false, origin, path));
    pre->add_step(std::move(step));
    return ok_status();
  }
  if (type == "ByteLevel") {
    *byte_level_seen = true;
    DSV4_ASSIGN_OR_RETURN(bool add_prefix_space,
                          get_bool(p, "add_prefix_space", true, origin, path));
    DSV4_ASSIGN_OR_RETURN(bool use_regex, get_bool(p, "use_regex", true, origin, path));
    if (add_prefix_space) {
      PreTokenizerStep step;
      step.kind = PreTokenizerStep::Kind::prefix_space;
      pre->add_step(std::move(step));
    }
    if (use_regex) {
      PreTokenizerStep step;
      DSV4_ASSIGN_OR_RETURN(step.regex, Regex::compile(kGpt2Pattern));
      DSV4_ASSIGN_OR_RETURN(step.regex_fast, Regex::compile(kGpt2Pattern, false, /*widen=*/false));
      step.behavior = SplitBehavior::isolated;
      pre->add_step(std::move(step));
    }
    return ok_status();
  }
  return unsupported_field(origin, path + ".type",
                           fmt::format("pre-tokenizer '{}' is not supported", type));
}

Status check_decoder(const Json& d, std::string_view origin) {
  if (d.is_null()) {
    return unsupported_field(origin, "decoder", "null decoder is not supported (need ByteLevel)");
  }
  DSV4_ASSIGN_OR_RETURN(std::string type, get_type(d, origin, "decoder"));
  if (type != "ByteLevel") {
    return unsupported_field(origin, "decoder.type",
                             fmt::format("decoder '{}' is not supported (need ByteLevel)", type));
  }
  return ok_status();
}

// ---- SAX loading: tokenizer.json is ~6 MB, almost all of it model.vocab (128K entries) and
// model.merges (128K pairs). Building a nlohmann DOM for those costs most of the load time
// (std::map nodes, one json value per string), so they are streamed straight into vectors and
// only the rest of the document becomes a DOM (model.vocab / model.merges are left null there).

using VocabList = std::vector<std::pair<std::string, int32_t>>;
using MergeList = std::vector<std::pair<std::string, std::string>>;

struct Streamed {
  std::optional<VocabList> vocab;
  std::optional<MergeList> merges;
};

class TokenizerSax {
 public:
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;

  TokenizerSax(Json* root, Streamed* streamed) : root_(root), streamed_(streamed) {}

  const std::string& error() const { return error_; }

  bool null() { return scalar(nullptr); }
  bool boolean(bool v) { return scalar(v); }
  bool number_integer(number_integer_t v) {
    if (mode_ == Mode::vocab) return vocab_id(v);
    return scalar(v);
  }
  bool number_unsigned(number_unsigned_t v) {
    if (mode_ == Mode::vocab) {
      const auto max = static_cast<number_unsigned_t>(std::numeric_limits<int64_t>::max());
      return vocab_id(v > max ? -1 : static_cast<int64_t>(v));
    }
    return scalar(v);
  }
  bool number_float(number_float_t v, const string_t&) { return scalar(v); }
  bool binary(binary_t&) { return fail("binary values are not JSON"); }
  bool string(string_t& v) {
    if (mode_ == Mode::merges) {
      if (merge_items_ >= 0) {  // inside ["a", "b"]
        if (merge_items_ >= 2) return merge_error();
        (merge_items_ == 0 ? pair_.first : pair_.second) = std::move(v);
        ++merge_items_;
        return true;
      }
      size_t sp = v.find(' ');
      if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos) {
        return fail(fmt::format("model.merges[{}]: '{}' is not two tokens separated by one space",
                                streamed_->merges->size(), v));
      }
      streamed_->merges->emplace_back(v.substr(0, sp), v.substr(sp + 1));
      return true;
    }
    return scalar(std::move(v));
  }
  bool start_object(std::size_t) {
    if (mode_ == Mode::none && pending_ == Mode::vocab) {
      pending_ = Mode::none;
      mode_ = Mode::vocab;
      streamed_->vocab.emplace();
      return true;
    }
    if (mode_ != Mode::none) return mode_ == Mode::vocab ? vocab_id(-1) : merge_error();
    pending_ = Mode::none;
    Json* j = put(Json::object());
    bool is_model = stack_.size() == 1 && top_key_ == "model";
    stack_.push_back(j);
    if (is_model) model_depth_ = stack_.size();
    return true;
  }
  bool key(string_t& k) {
    if (mode_ == Mode::vocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    if (stack_.size() == 1) top_key_ = k;
    pending_ = Mode::none;
    if (model_depth_ != 0 && stack_.size() == model_depth_) {
      if (k == "vocab") pending_ = Mode::vocab;
      if (k == "merges") pending_ = Mode::merges;
    }
    element_ = &(*stack_.back())[k];
    return true;
  }
  bool end_object() {
    if (mode_ == Mode::vocab) {
      mode_ = Mode::none;
      return scalar(nullptr);  // model.vocab stays null in the DOM
    }
    if (model_depth_ == stack_.size()) model_depth_ = 0;
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    if (mode_ == Mode::none && pending_ == Mode::merges) {
      pending_ = Mode::none;
      mode_ = Mode::merges;
      merge_items_ = -1;
      streamed_->merges.emplace();
      return true;
    }
    if (mode_ == Mode::merges && merge_items_ < 0) {
      merge_items_ = 0;
      return true;
    }
    if (mode_ != Mode::none) return mode_ == Mode::vocab ? vocab_id(-1) : merge_error();
    pending_ = Mode::none;
    stack_.push_back(put(Json::array()));
    return true;
  }
  bool end_array() {
    if (mode_ == Mode::merges) {
      if (merge_items_ < 0) {
        mode_ = Mode::none;
        return scalar(nullptr);  // model.merges stays null in the DOM
      }
      if (merge_items_ != 2) return merge_error();
      streamed_->merges->push_back(std::move(pair_));
      pair_ = {};
      merge_items_ = -1;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const Json::exception& e) {
    return fail(fmt::format("not valid JSON: {}", e.what()));
  }

 private:
  enum class Mode { none, vocab, merges };

  template <typename V>
  Json* put(V&& v) {
    if (stack_.empty()) {
      *root_ = Json(std::forward<V>(v));
      return root_;
    }
    Json* top = stack_.back();
    if (top->is_array()) {
      top->push_back(Json(std::forward<V>(v)));
      return &top->back();
    }
    *element_ = Json(std::forward<V>(v));
    return element_;
  }
  template <typename V>
  bool scalar(V&& v) {
    if (mode_ == Mode::vocab) return vocab_id(-1);
    if (mode_ == Mode::merges) return merge_error();
    pending_ = Mode::none;
    put(std::forward<V>(v));
    return true;
  }
  bool vocab_id(int64_t id) {
    if (id < 0 || id > std::numeric_limits<int32_t>::max() - 1) {
      return fail(
          fmt::format("model.vocab[\"{}\"]: id must be an integer in [0, 2^31-2]", vocab_key_));
    }
    streamed_->vocab->emplace_back(std::move(vocab_key_), static_cast<int32_t>(id));
    return true;
  }
  bool merge_error() {
    return fail(fmt::format("model.merges[{}]: expected \"a b\" or [\"a\", \"b\"]",
                            streamed_->merges->size()));
  }
  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  Json* root_;
  Streamed* streamed_;
  std::vector<Json*> stack_;
  Json* element_ = nullptr;
  std::string top_key_;
  size_t model_depth_ = 0;  // stack depth of the "model" object while inside it
  Mode pending_ = Mode::none;
  Mode mode_ = Mode::none;
  std::string vocab_key_;
  int merge_items_ = -1;  // -1: between merges; 0..2: strings seen inside ["a", "b"]
  std::pair<std::string, std::string> pair_;
  std::string error_;
};

Result<BpeModel> parse_model(const Json& m, Streamed streamed, std::string_view origin) {
  if (!m.is_object()) return field_error(origin, "model", "expected an object");
  const Json* type = member(m, "type");
  if (type && !(type->is_string() && type->get<std::string>() == "BPE")) {
    return unsupported_field(
        origin, "model.type",
        fmt::format("model type {} is not supported (only BPE)", type->dump()));
  }
  if (!streamed.vocab) return field_error(origin, "model.vocab", "missing or not an object");
  if (!streamed.merges) return field_error(origin, "model.merges", "missing or not an array");

  if (const Json* d = member(m, "dropout"); d && !d->is_null()) {
    if (!d->is_number()) return field_error(origin, "model.dropout", "expected a number or null");
    if (d->get<double>() > 0.0) {
      return unsupported_field(origin, "model.dropout", "BPE dropout is not supported");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    DSV4_ASSIGN_OR_RETURN(auto v, get_opt_string(m, key, origin, "model"));
    if (v && !v->empty()) {
      return unsupported_field(origin, std::string("model.") + key, "is not supported");
    }
  }
  DSV4_ASSIGN_OR_RETURN(bool byte_fallback, get_bool(m, "byte_fallback", false, origin, "model"));
  if (byte_fallback) {
    return unsupported_field(origin, "model.byte_fallback", "byte_fallback is not supported");
  }
  BpeModel::Options opt;
  DSV4_ASSIGN_OR_RETURN(opt.unk_token, get_opt_string(m, "unk_token", origin, "model"));
  DSV4_ASSIGN_OR_RETURN(opt.fuse_unk, get_bool(m, "fuse_unk", false, origin, "model"));
  DSV4_ASSIGN_OR_RETURN(opt.ignore_merges, get_bool(m, "ignore_merges", false, origin, "model"));

  return BpeModel::build(std::move(*streamed.vocab), *streamed.merges, std::move(opt),
                         fmt::format("{}: model", origin));
}

Result<std::vector<AddedToken>> parse_added_tokens(const Json* list, std::string_view origin) {
  std::vector<AddedToken> out;
  if (!list || list->is_null()) return out;
  if (!list->is_array()) return field_error(origin, "added_tokens", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& e = (*list)[i];
    std::string path = fmt::format("added_tokens[{}]", i);
    if (!e.is_object()) return field_error(origin, path, "expected an object");
    AddedToken t;
    const Json* id = member(e, "id");
    if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > std::numeric_limits<int32_t>::max() - 1) {
      return field_error(origin, path + ".id", "must be an integer in [0, 2^31-2]");
    }
    t.id = static_cast<int32_t>(id->get<int64_t>());
    const Json* content = member(e, "content");
    if (!content || !content->is_string()) {
      return field_error(origin, path + ".content", "missing or not a string");
    }
    t.content = content->get<std::string>();
    DSV4_ASSIGN_OR_RETURN(t.special, get_bool(e, "special", false, origin, path));
    DSV4_ASSIGN_OR_RETURN(t.single_word, get_bool(e, "single_word", false, origin, path));
    DSV4_ASSIGN_OR_RETURN(t.lstrip, get_bool(e, "lstrip", false, origin, path));
    DSV4_ASSIGN_OR_RETURN(t.rstrip, get_bool(e, "rstrip", false, origin, path));
    DSV4_ASSIGN_OR_RETURN(t.normalized, get_bool(e, "normalized", true, origin, path));
    out.push_back(std::move(t));
  }
  return out;
}

Result<std::optional<std::string>> config_token(const Json& cfg, const char* key,
                                                std::string_view origin) {
  const Json* v = member(cfg, key);
  if (!v || v->is_null()) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(v->get<std::string>());
  if (v->is_object()) {
    const Json* c = member(*v, "content");
    if (c && c->is_string()) return std::optional<std::string>(c->get<std::string>());
  }
  return field_error(origin, key, "expected a string, {\"content\": ..} or null");
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view origin,
                                       std::string_view config_json) {
  Json root;
  Streamed streamed;
  TokenizerSax sax(&root, &streamed);
  bool parsed = false;
  try {
    parsed = Json::sax_parse(tokenizer_json.begin(), tokenizer_json.end(), &sax);
  } catch (const std::exception& e) {  // allocation failures; parse errors come via the handler
    return parse_error(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  if (!parsed) {
    return parse_error(
        fmt::format("{}: {}", origin, sax.error().empty() ? "not valid JSON" : sax.error()));
  }
  if (!root.is_object()) return parse_error(fmt::format("{}: top level is not an object", origin));

  auto impl = std::make_unique<Impl>();
  impl->origin = std::string(origin);

  const Json* model = member(root, "model");
  if (!model) return field_error(origin, "model", "missing");
  DSV4_ASSIGN_OR_RETURN(impl->bpe, parse_model(*model, std::move(streamed), origin));

  if (const Json* n = member(root, "normalizer")) {
    DSV4_RETURN_IF_ERROR(check_normalizer(*n, origin, "normalizer"));
  }
  const Json* pre = member(root, "pre_tokenizer");
  if (!pre || pre->is_null()) {
    return unsupported_field(origin, "pre_tokenizer",
                             "missing (a ByteLevel pre-tokenizer is required)");
  }
  bool byte_level = false;
  DSV4_RETURN_IF_ERROR(add_pre_tokenizer(*pre, origin, "pre_tokenizer", &impl->pre, &byte_level));
  if (!byte_level) {
    return unsupported_field(origin, "pre_tokenizer",
                             "no ByteLevel step (only byte-level BPE is supported)");
  }
  const Json* dec = member(root, "decoder");
  if (!dec) return field_error(origin, "decoder", "missing");
  DSV4_RETURN_IF_ERROR(check_decoder(*dec, origin));

  DSV4_ASSIGN_OR_RETURN(impl->added, parse_added_tokens(member(root, "added_tokens"), origin));
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& t = impl->added[i];
    if (t.content.empty()) continue;
    if (!impl->added_by_content.emplace(t.content, t.id).second) {
      return field_error(origin, fmt::format("added_tokens[{}].content", i),
                         fmt::format("'{}' appears twice", t.content));
    }
    if (!impl->added_by_id.emplace(t.id, i).second) {
      return field_error(origin, fmt::format("added_tokens[{}].id", i),
                         fmt::format("id {} appears twice", t.id));
    }
  }
  DSV4_ASSIGN_OR_RETURN(impl->added_vocab, AddedVocab::build(&impl->added));

  // Id table: added tokens take precedence over the model (tokenizers' id_to_token).
  int32_t max_id = impl->bpe.max_id();
  for (const AddedToken& t : impl->added) max_id = std::max(max_id, t.id);
  impl->vocab_size = max_id + 1;
  impl->id_bytes.assign(static_cast<size_t>(impl->vocab_size), std::string());
  impl->id_flags.assign(static_cast<size_t>(impl->vocab_size), 0);
  for (int32_t id = 0; id <= impl->bpe.max_id(); ++id) {
    if (const std::string* tok = impl->bpe.token(id)) {
      impl->id_bytes[static_cast<size_t>(id)] = utf8::byte_level_to_bytes(*tok);
      impl->id_flags[static_cast<size_t>(id)] = Impl::kExists;
    }
  }
  for (const AddedToken& t : impl->added) {
    if (t.content.empty()) continue;
    impl->id_bytes[static_cast<size_t>(t.id)] = utf8::byte_level_to_bytes(t.content);
    impl->id_flags[static_cast<size_t>(t.id)] =
        Impl::kExists | (t.special ? Impl::kSpecial : uint8_t{0});
  }

  if (!config_json.empty()) {
    std::string cfg_origin = fmt::format("{} (tokenizer_config.json)", origin);
    Json cfg;
    try {
      cfg = Json::parse(config_json.begin(), config_json.end());
    } catch (const Json::exception& e) {
      return parse_error(fmt::format("{}: not valid JSON: {}", cfg_origin, e.what()));
    }
    if (!cfg.is_object())
      return parse_error(fmt::format("{}: top level is not an object", cfg_origin));
    Tokenizer probe(std::move(impl));
    for (auto [key, slot] :
         {std::pair{"bos_token", &probe.impl_->bos}, std::pair{"eos_token", &probe.impl_->eos}}) {
      DSV4_ASSIGN_OR_RETURN(auto tok, config_token(cfg, key, cfg_origin));
      if (!tok) continue;
      auto id = probe.token_to_id(*tok);
      if (!id) return field_error(cfg_origin, key, fmt::format("'{}' is not a token", *tok));
      *slot = *id;
    }
    return probe;
  }
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  fs::path file = fs::is_directory(p, ec) ? p / "tokenizer.json" : p;
  if (!fs::exists(file, ec)) {
    return not_found(
        fmt::format("{}: no such file{}", file.string(),
                    fs::is_directory(p, ec) ? " (model directory has no tokenizer.json)" : ""));
  }
  DSV4_ASSIGN_OR_RETURN(std::string text, read_file(file.string()));
  std::string config;
  fs::path cfg = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg, ec)) {
    DSV4_ASSIGN_OR_RETURN(config, read_file(cfg.string()));
    if (config.empty()) return parse_error(fmt::format("{}: empty file", cfg.string()));
  }
  return from_json(text, file.string(), config);
}

Status Tokenizer::Impl::encode_valid(std::string_view text, AddedTokens match,
                                     PreTokenizer::Scratch& ps, BpeModel::Scratch& bs,
                                     std::vector<AddedVocab::Segment>& segs,
                                     std::vector<int32_t>* out) const {
  auto emit = [&](std::string_view piece) -> Status {
    bpe.encode_piece(piece, bs, out);
    return ok_status();
  };
  if (added_vocab.empty() || match == AddedTokens::none) return pre.run(text, ps, emit);
  DSV4_RETURN_IF_ERROR(added_vocab.split(text, match == AddedTokens::all, &segs));
  for (const auto& s : segs) {
    if (s.id >= 0) {
      out->push_back(s.id);
    } else {
      DSV4_RETURN_IF_ERROR(pre.run(text.substr(s.begin, s.end - s.begin), ps, emit));
    }
  }
  return ok_status();
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text, AddedTokens match) const {
  if (text.size() >= std::numeric_limits<uint32_t>::max()) {
    return invalid_argument(
        fmt::format("encode: text of {} bytes is too long (max 4 GiB)", text.size()));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 4);
  PreTokenizer::Scratch ps;
  BpeModel::Scratch bs;
  std::vector<AddedVocab::Segment> segs;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t good = utf8::valid_prefix_len(text.substr(pos));
    if (good > 0) {
      DSV4_RETURN_IF_ERROR(impl_->encode_valid(text.substr(pos, good), match, ps, bs, segs, &ids));
      pos += good;
    }
    if (pos >= text.size()) break;
    // A maximal run of bytes that are not part of well-formed characters: one piece.
    size_t start = pos;
    while (pos < text.size()) {
      utf8::Unit u = utf8::next_unit(text, pos);
      if (u.kind == utf8::UnitKind::valid) break;
      pos += u.len;
    }
    impl_->bpe.encode_piece(text.substr(start, pos - start), bs, &ids);
  }
  return ids;
}

Status Tokenizer::Impl::decode_into(std::span<const int32_t> ids, bool skip_special,
                                    std::string* out) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    if (id < 0 || id >= vocab_size || !(id_flags[static_cast<size_t>(id)] & kExists)) {
      return invalid_argument(fmt::format(
          "decode: ids[{}] = {} is not a token of {} (vocab size {})", i, id, origin, vocab_size));
    }
    if (skip_special && (id_flags[static_cast<size_t>(id)] & kSpecial)) continue;
    out->append(id_bytes[static_cast<size_t>(id)]);
  }
  return ok_status();
}

Result<std::string> Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  DSV4_RETURN_IF_ERROR(impl_->decode_into(ids, skip_special, &out));
  return out;
}

Result<std::string> Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  DSV4_ASSIGN_OR_RETURN(std::string bytes, decode_bytes(ids, skip_special));
  if (utf8::is_valid(bytes)) return bytes;
  std::string out;
  out.reserve(bytes.size() + 8);
  utf8::append_lossy(out, bytes);
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->bpe.find(token);
}

std::optional<std::string_view> Tokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return std::string_view(impl_->added[it->second].content);
  if (const std::string* t = impl_->bpe.token(id)) return std::string_view(*t);
  return std::nullopt;
}

std::optional<std::string_view> Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size ||
      !(impl_->id_flags[static_cast<size_t>(id)] & Impl::kExists)) {
    return std::nullopt;
  }
  return std::string_view(impl_->id_bytes[static_cast<size_t>(id)]);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size &&
         (impl_->id_flags[static_cast<size_t>(id)] & Impl::kSpecial);
}

int32_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}
std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}
const std::vector<AddedToken>& Tokenizer::added_tokens() const {
  return impl_->added;
}

// ---- StreamDecoder ----

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

Result<std::string> StreamDecoder::push(int32_t id) {
  int32_t one[1] = {id};
  DSV4_ASSIGN_OR_RETURN(std::string bytes, tokenizer_->decode_bytes(one, skip_special_));
  pending_.append(bytes);
  // Everything but a trailing, still-completable character can be emitted: the held-back tail
  // starts with a lead byte, so it is a unit boundary for the full decode as well.
  size_t keep = utf8::truncated_tail_len(pending_);
  std::string_view ready(pending_.data(), pending_.size() - keep);
  std::string out;
  if (utf8::is_valid(ready)) {
    out.assign(ready);
  } else {
    utf8::append_lossy(out, ready);
  }
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  utf8::append_lossy(out, pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv4::tokenizer
