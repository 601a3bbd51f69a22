// engine/engine.cpp — Engine (model + tokenizer + threads) and Session (one timeline); see
// engine.h for the invariants and the KV-reuse rule.
#include "engine/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>

#include "base/thread_pool.h"
#include "base/timer.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "kv/cache.h"
#include "model/kv_snapshot.h"
#include "model/model.h"

namespace dsv4::engine {

namespace fs = std::filesystem;

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::eos:
      return "eos";
    case FinishReason::stop_string:
      return "stop string";
    case FinishReason::max_tokens:
      return "max tokens";
    case FinishReason::context_full:
      return "context full";
    case FinishReason::cancelled:
      return "cancelled";
  }
  return "?";
}

// ------------------------------------------------------------------------------------ Engine

struct Engine::Impl {
  EngineOptions options;
  ModelSummary summary;
  std::unique_ptr<model::Model> model;
  std::optional<tokenizer::Tokenizer> tok;
  std::unique_ptr<ThreadPool> pool;        // mutable through the pointer: forward() needs a pool
  std::shared_ptr<kv::BlockPool> kv_pool;  // the KV byte budget all sessions share
  kv::Scheme kv_scheme = kv::Scheme::f32;
  kv::CacheOptions kv_options;

  // Prefix cache: forks (copy-on-write, kv/cache.h) of the states sessions reached at the end of
  // their prompts, newest use last. A session publishes one entry (replacing its previous one);
  // entries outlive their sessions, which is what lets a new session start from an earlier
  // request's prefix. Evicted least recently used first, and whenever the KV budget is full.
  struct PrefixEntry {
    const void* owner = nullptr;  // the publishing Session::Impl (may be gone)
    model::SequenceState state;   // state.tokens: the ids it holds
    uint64_t last_use = 0;
  };
  mutable std::mutex prefix_mu;
  mutable std::vector<PrefixEntry> prefix;
  mutable uint64_t prefix_clock = 0;

  // Drops the least recently used entry; false when there is none. Caller holds prefix_mu.
  bool erase_lru_locked() const {
    if (prefix.empty()) return false;
    prefix.erase(std::min_element(prefix.begin(), prefix.end(), [](const auto& a, const auto& b) {
      return a.last_use < b.last_use;
    }));
    return true;
  }
  bool evict_one() const {
    std::lock_guard<std::mutex> lock(prefix_mu);
    return erase_lru_locked();
  }
  std::vector<int32_t> eos;
  // Ids in [0, tokenizer vocab) that name no token: masked to -inf before sampling.
  std::vector<int32_t> holes;
};

namespace {

volatile unsigned g_prefault_sink = 0;  // the page reads below must not be optimised away

// Reads one byte of every 4 KiB page of every tensor, in file order, so later forward passes find
// the weights resident. Progress about every 64 MiB.
void prefault_weights(const formats::SafetensorsModel& ckpt, const LoadProgressFn& progress,
                      const Timer& timer) {
  std::vector<const formats::TensorView*> order(ckpt.tensors().begin(), ckpt.tensors().end());
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return a->shard != b->shard ? a->shard < b->shard : a->file_offset < b->file_offset;
  });
  constexpr size_t kPage = 4096;
  constexpr uint64_t kReportEvery = uint64_t{64} << 20;
  const uint64_t total = ckpt.total_bytes();
  uint64_t done = 0, next_report = kReportEvery;
  unsigned sink = 0;
  for (const formats::TensorView* t : order) {
    ckpt.advise(*t, AccessHint::willneed);
    const uint8_t* p = t->data();
    for (size_t off = 0; off < t->size_bytes(); off += kPage) {
      sink += *static_cast<const volatile uint8_t*>(p + off);
    }
    done += t->size_bytes();
    if (progress && done >= next_report) {
      progress({"prefault", done, total, timer.seconds()});
      next_report = done + kReportEvery;
    }
  }
  if (progress) progress({"prefault", total, total, timer.seconds()});
  g_prefault_sink = sink;
}

}  // namespace

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::load(const std::string& model_dir,
                                             const EngineOptions& options,
                                             const LoadProgressFn& progress) {
  if (options.prefill_chunk < 1) {
    return invalid_argument(fmt::format("prefill chunk {} must be >= 1", options.prefill_chunk));
  }
  if (options.prefix_cache_entries < 0) {
    return invalid_argument(
        fmt::format("prefix cache entries {} must be >= 0", options.prefix_cache_entries));
  }
  if (options.checkpoint_interval < 0) {
    return invalid_argument(
        fmt::format("checkpoint interval {} must be >= 0", options.checkpoint_interval));
  }
  std::error_code ec;
  if (!fs::exists(model_dir, ec)) return not_found(fmt::format("{}: no such directory", model_dir));
  if (!fs::is_directory(model_dir, ec)) {
    return invalid_argument(fmt::format(
        "{}: not a directory (a model directory holds config.json, the safetensors weights and "
        "tokenizer.json)",
        model_dir));
  }
  Timer timer;
  auto report = [&](std::string_view stage, uint64_t done, uint64_t total) {
    if (progress) progress({stage, done, total, timer.seconds()});
  };
  auto impl = std::make_unique<Impl>();
  impl->options = options;

  // config.json first: pointing at a directory that is not a model is the most common mistake,
  // and its error ("DIR: directory has no config.json") says so best.
  DSV4_ASSIGN_OR_RETURN(formats::ModelConfig cfg, formats::load_model_config(model_dir));

  report("tokenizer", 0, 1);
  DSV4_ASSIGN_OR_RETURN(tokenizer::Tokenizer tok, tokenizer::Tokenizer::load(model_dir));
  const std::string tok_file = (fs::path(model_dir) / "tokenizer.json").string();
  if (static_cast<int64_t>(tok.vocab_size()) > cfg.vocab_size) {
    return invalid_argument(fmt::format(
        "{}: the tokenizer has {} token ids but {} says vocab_size {}: tokenizer and model do not "
        "belong together",
        tok_file, tok.vocab_size(), cfg.source, cfg.vocab_size));
  }
  report("tokenizer", 1, 1);

  report("model", 0, 1);
  DSV4_ASSIGN_OR_RETURN(impl->model, model::Model::load(model_dir));
  report("model", 1, 1);
  const formats::ModelConfig& c = impl->model->config();

  // EOS: the tokenizer's, plus the config's ids where they name a tokenizer token.
  if (tok.eos_id()) impl->eos.push_back(*tok.eos_id());
  for (int64_t id : c.eos_token_id) {
    if (id >= 0 && id < tok.vocab_size() && tok.token_bytes(static_cast<int32_t>(id))) {
      impl->eos.push_back(static_cast<int32_t>(id));
    }
  }
  std::sort(impl->eos.begin(), impl->eos.end());
  impl->eos.erase(std::unique(impl->eos.begin(), impl->eos.end()), impl->eos.end());
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (!tok.token_bytes(id)) impl->holes.push_back(id);
  }
  if (impl->holes.size() == static_cast<size_t>(tok.vocab_size())) {
    return invalid_argument(fmt::format("{}: the tokenizer names no tokens", tok_file));
  }

  if (options.prefault) prefault_weights(impl->model->checkpoint(), progress, timer);

  impl->pool = std::make_unique<ThreadPool>(options.threads, options.pin_threads);
  impl->kv_pool = std::make_shared<kv::BlockPool>(
      options.kv_budget_bytes == 0 ? kv::BlockPool::kUnlimited : options.kv_budget_bytes);
  impl->kv_scheme = options.kv_storage == EngineOptions::KvStorage::official ? kv::Scheme::official
                                                                             : kv::Scheme::f32;
  impl->kv_options.checkpoint_interval = options.checkpoint_interval;
  // The storage must exist for this config (official records need dims in multiples of 64/32).
  DSV4_RETURN_IF_ERROR(
      impl->model->new_sequence(impl->kv_scheme, impl->kv_pool, impl->kv_options).status());
  ModelSummary& s = impl->summary;
  s.dir = model_dir;
  s.layers = c.num_hidden_layers;
  s.hidden_size = c.hidden_size;
  s.vocab_size = c.vocab_size;
  s.routed_experts = c.n_routed_experts;
  s.experts_per_token = c.num_experts_per_tok;
  s.max_context = c.max_position_embeddings;
  s.tokenizer_vocab = tok.vocab_size();
  s.weight_bytes = impl->model->checkpoint().total_bytes();
  s.threads = impl->pool->num_threads();
  s.pinned = impl->pool->pinned();
  impl->tok.emplace(std::move(tok));
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const tokenizer::Tokenizer& Engine::tokenizer() const {
  return *impl_->tok;
}
const ModelSummary& Engine::summary() const {
  return impl_->summary;
}
const EngineOptions& Engine::options() const {
  return impl_->options;
}
const std::vector<int32_t>& Engine::eos_ids() const {
  return impl_->eos;
}

// ------------------------------------------------------------------------------------ Session

struct Session::Impl {
  // The session's prefix-cache entry outlives it but is no longer its own: a later session
  // allocated at the same address must not replace it as if it were.
  ~Impl() {
    if (e == nullptr) return;
    std::lock_guard<std::mutex> lock(e->prefix_mu);
    for (auto& x : e->prefix)
      if (x.owner == this) x.owner = nullptr;
  }
  const Engine* engine = nullptr;
  const Engine::Impl* e = nullptr;
  model::SequenceState state;
  // The timeline; tokens[0, n_eval) are in `state`.
  std::vector<int32_t> tokens;
  int64_t n_eval = 0;
  // [model vocab] f32 logits after tokens[n_eval - 1]; valid when logits_valid (a state forked
  // from the prefix cache or loaded from a snapshot comes without them).
  std::vector<float> logits;
  bool logits_valid = false;
  std::vector<float> row;  // [tokenizer vocab] scratch: the logits the sampler sees

  // Empties the timeline. The empty state needs only the compressor-state buffers; if even those
  // do not fit the KV budget, the state stays empty-without-layers and the next forward() reports
  // the error.
  Status reset() {
    tokens.clear();
    n_eval = 0;
    logits_valid = false;
    state = model::SequenceState{};  // return the old blocks to the pool first
    return ensure_state();
  }
  // Creates the (empty) model state if an earlier reset could not (KV budget full).
  Status ensure_state() {
    if (state.kv.n_layers() > 0) return ok_status();
    DSV4_CHECK(n_eval == 0);
    DSV4_ASSIGN_OR_RETURN(state, e->model->new_sequence(e->kv_scheme, e->kv_pool, e->kv_options));
    return ok_status();
  }

  // Drops evaluated tokens past `keep` (< n_eval): the state goes back to its last rewind
  // checkpoint s <= keep and the timeline to tokens[0, s) + the rest pending. Returns s.
  Result<int64_t> rewind_to(int64_t keep) {
    const int64_t s = state.kv.checkpoint_at_or_before(keep);
    Status st = e->model->rewind(state, s, *e->pool);  // at a checkpoint: no replay
    if (!st.ok()) {
      (void)reset();
      return st;
    }
    n_eval = s;
    logits_valid = false;
    return s;
  }

  // How many evaluated tokens a state of `held` tokens may keep for a prompt of `n_prompt` ids
  // sharing `lcp` (<= held) with it: the common prefix, but when that is the whole prompt, the
  // last prompt token runs again for its logits unless they are at hand.
  static int64_t keep_limit(int64_t lcp, int64_t held, bool with_logits, int64_t n_prompt) {
    if (lcp == n_prompt && !(lcp == held && with_logits)) return std::max<int64_t>(n_prompt - 1, 0);
    return lcp;
  }

  // Tokens of `prompt` a state holding `held` (its first n tokens evaluated, logits valid or not)
  // can keep without recomputing: the common prefix, cut to a rewind checkpoint when the state
  // holds more than that, and never all of the prompt unless its logits are at hand.
  static int64_t reusable(const model::SequenceState& st, std::span<const int32_t> held, int64_t n,
                          bool with_logits, std::span<const int32_t> prompt) {
    const int64_t lcp = static_cast<int64_t>(
        std::mismatch(held.begin(), held.begin() + n, prompt.begin(), prompt.end()).first -
        held.begin());
    const int64_t keep = keep_limit(lcp, n, with_logits, static_cast<int64_t>(prompt.size()));
    return keep == n ? n : st.kv.checkpoint_at_or_before(keep);
  }

  // Makes `logits` those after the last timeline token: evaluates pending tokens, or re-runs the
  // last evaluated one (rewind to the checkpoint before it) when the state came without logits.
  Status ensure_logits() {
    DSV4_RETURN_IF_ERROR(evaluate_pending({}));
    if (logits_valid || n_eval == 0) return ok_status();
    DSV4_ASSIGN_OR_RETURN(const int64_t kept, rewind_to(n_eval - 1));
    (void)kept;
    return evaluate_pending({});
  }

  // Publishes a fork of the state (its evaluated tokens) to the engine's prefix cache,
  // replacing this session's previous entry. Best effort: a full budget skips it.
  void publish() {
    const int cap = e->options.prefix_cache_entries;
    if (cap == 0 || n_eval == 0) return;
    Result<model::SequenceState> f = model::fork_sequence(state);
    if (!f.ok()) return;
    std::lock_guard<std::mutex> lock(e->prefix_mu);
    auto& entries = e->prefix;
    entries.erase(std::remove_if(entries.begin(), entries.end(),
                                 [this](const auto& x) { return x.owner == this; }),
                  entries.end());
    entries.push_back({this, std::move(*f), ++e->prefix_clock});
    while (entries.size() > static_cast<size_t>(cap)) e->erase_lru_locked();
  }

  // If an entry of the prefix cache lets `prompt` keep more tokens than this session's own
  // state, continues from a fork of it. Returns whether it did.
  bool adopt_best_prefix(std::span<const int32_t> prompt) {
    const int64_t own = n_eval > 0 ? reusable(state, tokens, n_eval, logits_valid, prompt) : 0;
    std::lock_guard<std::mutex> lock(e->prefix_mu);
    Engine::Impl::PrefixEntry* best = nullptr;
    int64_t best_keep = own;
    for (auto& x : e->prefix) {
      const int64_t k = reusable(x.state, x.state.tokens, x.state.n_tokens, false, prompt);
      if (k > best_keep) {
        best_keep = k;
        best = &x;
      }
    }
    if (best == nullptr) return false;
    Result<model::SequenceState> f = model::fork_sequence(best->state);
    if (!f.ok()) return false;  // no room to fork: go on with the own state
    best->last_use = ++e->prefix_clock;
    state = std::move(*f);
    tokens = state.tokens;
    n_eval = state.n_tokens;
    logits_valid = false;
    return true;
  }

  Status check_ids(std::span<const int32_t> ids) const {
    const int32_t v = e->tok->vocab_size();
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= v) {
        return invalid_argument(
            fmt::format("token id {} (position {}) is outside the tokenizer's vocabulary [0, {})",
                        ids[i], i, v));
      }
    }
    return ok_status();
  }

  Status check_context(size_t n) const {
    const int64_t max_ctx = e->summary.max_context;
    if (max_ctx > 0 && static_cast<int64_t>(n) > max_ctx) {
      return invalid_argument(fmt::format(
          "{} tokens do not fit the model's context of {} tokens (max_position_embeddings)", n,
          max_ctx));
    }
    return ok_status();
  }

  // Runs tokens[n_eval, size) through the model in chunks; logits only for the last one.
  // A model error leaves the state unknown: the session is reset.
  Status evaluate_pending(const PrefillProgressFn& progress) {
    const int64_t total = static_cast<int64_t>(tokens.size()) - n_eval;
    if (total <= 0) return ok_status();
    if (Status st = ensure_state(); !st.ok()) {
      tokens.resize(static_cast<size_t>(n_eval));
      return st;
    }
    const int64_t chunk = e->options.prefill_chunk;
    Timer timer;
    int64_t done = 0;
    while (done < total) {
      const int64_t n = std::min(chunk, total - done);
      const bool last = done + n == total;
      const std::span<const int32_t> part(tokens.data() + n_eval, static_cast<size_t>(n));
      Status s = e->model->forward(part, state, *e->pool, last ? logits.data() : nullptr,
                                   /*all_logits=*/false);
      // A full KV budget: forward() changed nothing; free prefix-cache entries and try again.
      while (s.code() == ErrorCode::out_of_memory && e->evict_one()) {
        s = e->model->forward(part, state, *e->pool, last ? logits.data() : nullptr, false);
      }
      if (!s.ok()) {
        (void)reset();
        return s;
      }
      if (last) logits_valid = true;
      n_eval += n;
      done += n;
      if (progress) progress({done, total, timer.seconds()});
    }
    return ok_status();
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Engine::new_session() const {
  auto impl = std::make_unique<Session::Impl>();
  impl->engine = this;
  impl->e = impl_.get();
  impl->logits.assign(static_cast<size_t>(impl_->summary.vocab_size), 0.0f);
  impl->row.assign(static_cast<size_t>(impl_->summary.tokenizer_vocab), 0.0f);
  (void)impl->reset();  // checked at load; a full budget shows at the first forward()
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

Status Session::prefill(std::span<const int32_t> tokens, const PrefillProgressFn& progress) {
  Impl& s = *impl_;
  DSV4_RETURN_IF_ERROR(s.check_ids(tokens));
  DSV4_RETURN_IF_ERROR(s.check_context(s.tokens.size() + tokens.size()));
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  return s.evaluate_pending(progress);
}

Result<PromptReuse> Session::set_prompt(std::span<const int32_t> tokens,
                                        const PrefillProgressFn& progress) {
  Impl& s = *impl_;
  DSV4_RETURN_IF_ERROR(s.check_ids(tokens));
  DSV4_RETURN_IF_ERROR(s.check_context(tokens.size()));
  PromptReuse r;
  r.prompt_tokens = static_cast<int64_t>(tokens.size());
  r.from_prefix_cache = s.adopt_best_prefix(tokens);
  const auto diverge =
      std::mismatch(s.tokens.begin(), s.tokens.end(), tokens.begin(), tokens.end());
  const auto lcp = static_cast<int64_t>(diverge.first - s.tokens.begin());
  r.common_prefix = std::min(lcp, s.n_eval);
  const int64_t keep = Impl::keep_limit(std::min(lcp, s.n_eval), s.n_eval, s.logits_valid,
                                        static_cast<int64_t>(tokens.size()));
  if (keep < s.n_eval) {
    const int64_t before = s.n_eval;
    DSV4_ASSIGN_OR_RETURN(const int64_t kept_state, s.rewind_to(keep));
    r.rewound = before - kept_state;
    r.fresh_state = kept_state == 0;
  }
  // tokens[0, n_eval) are in the state; tokens[n_eval, lcp) agree with the prompt and are pending.
  s.tokens.resize(static_cast<size_t>(lcp));
  const size_t kept = s.tokens.size();  // a prefix of `tokens`
  r.reused = s.n_eval;
  s.tokens.insert(s.tokens.end(), tokens.begin() + static_cast<std::ptrdiff_t>(kept), tokens.end());
  r.prefilled = r.prompt_tokens - r.reused;
  Timer timer;
  DSV4_RETURN_IF_ERROR(s.evaluate_pending(progress));
  r.seconds = timer.seconds();
  s.publish();
  return r;
}

Result<std::vector<int32_t>> Session::chat_prompt(
    const tokenizer::ChatRequest& conversation) const {
  const Impl& s = *impl_;
  const tokenizer::Tokenizer& tok = *s.e->tok;
  DSV4_ASSIGN_OR_RETURN(tokenizer::RenderedPrompt prompt, tokenizer::render_chat(conversation));
  const std::string_view text = prompt.text;
  std::vector<int32_t> ids;
  size_t pos = 0;      // bytes of `text` done
  size_t tpos = 0;     // timeline ids matched so far
  bool follow = true;  // every id so far equals the timeline's
  const size_t n = s.tokens.size();

  auto encode = [&](std::string_view seg) -> Status {
    DSV4_ASSIGN_OR_RETURN(std::vector<int32_t> part,
                          tok.encode(seg, tokenizer::Tokenizer::AddedTokens::none));
    ids.insert(ids.end(), part.begin(), part.end());
    return ok_status();
  };
  // Plain text [pos, end): the timeline's ids if the text they showed (decoded as generate()
  // streams it: special tokens spelled out, ill-formed UTF-8 as U+FFFD) is exactly this text, or
  // a prefix of it at which the timeline ends; else the canonical encoding.
  auto plain = [&](size_t end) -> Status {
    if (end <= pos) return ok_status();
    const std::string_view seg = text.substr(pos, end - pos);
    pos = end;
    if (!follow) return encode(seg);
    follow = false;
    tokenizer::StreamDecoder dec(tok);
    size_t j = tpos, shown = 0;              // ids pushed, bytes of `seg` they showed
    size_t clean_j = tpos, clean_shown = 0;  // the last point with no bytes held back
    bool mismatch = false;
    while (j < n) {
      Result<std::string> piece = dec.push(s.tokens[j]);
      if (!piece.ok() || seg.substr(shown, piece->size()) != *piece) {
        mismatch = true;
        break;
      }
      shown += piece->size();
      ++j;
      if (dec.pending_bytes() == 0) {
        clean_j = j;
        clean_shown = shown;
        if (shown == seg.size()) break;
      } else if (const std::string tail = tokenizer::StreamDecoder(dec).flush();
                 shown + tail.size() == seg.size() && seg.substr(shown) == tail) {
        // The answer ended inside a character, shown as U+FFFD.
        clean_j = j;
        clean_shown = seg.size();
        break;
      }
    }
    if (clean_shown == seg.size()) {  // the whole segment
      follow = true;
    } else if (mismatch || clean_j == tpos) {
      return encode(seg);
    }
    // The whole segment, or the prefix the timeline ends with (then the rest canonically).
    ids.insert(ids.end(), s.tokens.begin() + static_cast<std::ptrdiff_t>(tpos),
               s.tokens.begin() + static_cast<std::ptrdiff_t>(clean_j));
    tpos = clean_j;
    return follow ? ok_status() : encode(seg.substr(clean_shown));
  };
  for (const auto& [begin, end] : prompt.special_ranges) {
    DSV4_CHECK(begin >= pos && end > begin && end <= text.size());  // render_chat's invariant
    DSV4_RETURN_IF_ERROR(plain(begin));
    const std::string_view spelling = text.substr(begin, end - begin);
    const std::optional<int32_t> id = tok.token_to_id(spelling);
    if (!id) {
      return not_found(
          fmt::format("the tokenizer has no token '{}' (DeepSeek-V4 chat format)", spelling));
    }
    ids.push_back(*id);
    if (follow && tpos < n && s.tokens[tpos] == *id) {
      ++tpos;
    } else {
      follow = false;
    }
    pos = end;
  }
  DSV4_RETURN_IF_ERROR(plain(text.size()));
  return ids;
}

Result<PromptReuse> Session::prefill_chat(const tokenizer::ChatRequest& conversation,
                                          const PrefillProgressFn& progress) {
  DSV4_ASSIGN_OR_RETURN(std::vector<int32_t> ids, chat_prompt(conversation));
  return set_prompt(ids, progress);
}

Result<GenerateResult> Session::generate(const SamplingParams& params, const StopConditions& stop,
                                         const TextFn& on_text, bool skip_special) {
  Impl& s = *impl_;
  DSV4_ASSIGN_OR_RETURN(Sampler sampler, Sampler::create(params));
  StopConditions conditions = stop;
  if (conditions.eos_ids.empty()) conditions.eos_ids = s.e->eos;
  DSV4_ASSIGN_OR_RETURN(StopChecker checker, StopChecker::create(std::move(conditions)));
  if (s.tokens.empty()) {
    return failed_precondition("generate: the session is empty (prefill a prompt first)");
  }
  GenerateResult r;
  Timer prefill_timer;
  r.prefilled = static_cast<int64_t>(s.tokens.size()) - s.n_eval;
  DSV4_RETURN_IF_ERROR(s.ensure_logits());
  r.prefill_seconds = prefill_timer.seconds();

  Timer timer;
  tokenizer::StreamDecoder decoder(*s.e->tok, skip_special);
  const int64_t max_ctx = s.e->summary.max_context;
  const size_t vocab = s.row.size();
  bool cancelled = false;
  auto emit = [&](const std::string& text) {
    if (text.empty() || cancelled) return;
    r.text += text;
    if (on_text && !on_text(text)) cancelled = true;
  };
  for (;;) {
    if (max_ctx > 0 && static_cast<int64_t>(s.tokens.size()) >= max_ctx) {
      r.finish = FinishReason::context_full;
      emit(checker.flush());
      break;
    }
    std::copy(s.logits.begin(), s.logits.begin() + static_cast<std::ptrdiff_t>(vocab),
              s.row.begin());
    for (int32_t h : s.e->holes)
      s.row[static_cast<size_t>(h)] = -std::numeric_limits<float>::infinity();
    DSV4_ASSIGN_OR_RETURN(const int32_t id, sampler.sample(s.row, s.tokens));
    s.tokens.push_back(id);
    r.tokens.push_back(id);
    DSV4_ASSIGN_OR_RETURN(std::string piece, decoder.push(id));
    StopChecker::Step step = checker.push(id, piece);
    emit(step.text);
    if (cancelled) {
      r.finish = FinishReason::cancelled;
      break;
    }
    if (step.stop != StopReason::none) {
      r.finish = step.stop == StopReason::eos           ? FinishReason::eos
                 : step.stop == StopReason::stop_string ? FinishReason::stop_string
                                                        : FinishReason::max_tokens;
      break;
    }
    DSV4_RETURN_IF_ERROR(s.evaluate_pending({}));
  }
  // An incomplete UTF-8 character at the very end comes out as U+FFFD (decode()'s rule); after an
  // EOS or a stop string nothing more is shown.
  if (r.finish == FinishReason::max_tokens || r.finish == FinishReason::context_full) {
    emit(decoder.flush());
  }
  r.seconds = timer.seconds();
  return r;
}

void Session::reset() {
  (void)impl_->reset();
}

Status Session::save_kv(const std::string& path) const {
  const Impl& s = *impl_;
  if (s.n_eval == 0) return failed_precondition("save: the session holds no evaluated tokens");
  return model::save_kv_snapshot(*s.e->model, s.state, path);
}

Status Session::load_kv(const std::string& path) {
  Impl& s = *impl_;
  DSV4_ASSIGN_OR_RETURN(model::SequenceState st,
                        model::load_kv_snapshot(*s.e->model, path, s.e->kv_pool, s.e->kv_options));
  if (st.kv.scheme() != s.e->kv_scheme) {
    return invalid_argument(fmt::format(
        "{}: the snapshot stores '{}' KV records but this engine uses '{}' (choose the same --kv)",
        path, kv::scheme_name(st.kv.scheme()), kv::scheme_name(s.e->kv_scheme)));
  }
  DSV4_RETURN_IF_ERROR(s.check_ids(st.tokens));
  s.state = std::move(st);
  s.tokens = s.state.tokens;
  s.n_eval = s.state.n_tokens;
  s.logits_valid = false;
  s.publish();
  return ok_status();
}
uint64_t Session::kv_allocated_bytes() const {
  return impl_->state.kv.allocated_bytes().total();
}
uint64_t Session::kv_reserved_bytes() const {
  return impl_->state.kv.reserved_bytes() + impl_->state.kv.checkpoint_bytes();
}
std::span<const int32_t> Session::tokens() const {
  return impl_->tokens;
}
int64_t Session::evaluated() const {
  return impl_->n_eval;
}
const Engine& Session::engine() const {
  return *impl_->engine;
}

}  // namespace dsv4::engine
