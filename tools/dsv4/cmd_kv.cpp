// dsv4 kv — how many bytes the KV cache of one sequence takes, per model, scheme and context.
//
//   dsv4 kv                                  embedded V3.2 / V4-Flash / V4-Pro / GQA baseline
//   dsv4 kv PATH/config.json [PATH2 ...]     any deepseek_v4/v32/v3, llama/qwen2/qwen3/mistral
//   --ctx 4096,128K,1M   --scheme bf16|f32|official (repeatable, comma lists)
//   --per-layer   --json   --csv   --plot FILE.svg   --mtp
//
// All numbers come from kv/layout.h (the allocator's own arithmetic); this file only formats.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/mmap_file.h"
#include "base/thread_pool.h"
#include "base/units.h"
#include "command.h"
#include "formats/model_config.h"
#include "kv/cache.h"
#include "kv/embedded_configs.h"
#include "kv/layout.h"
#include "model/model.h"
#include "svg.h"

namespace dsv4::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr const char* kDefaultCtx = "128K,160K,1M";

struct Options {
  std::vector<std::string> paths;
  std::string ctx = kDefaultCtx;
  std::vector<std::string> schemes;
  bool per_layer = false;
  bool json = false;
  bool csv = false;
  bool mtp = false;
  std::string plot;
  std::string measure;      // MODEL_DIR: build real caches and compare with the prediction
  bool no_compute = false;  // --measure: fill with synthetic rows instead of running the model
};

struct Model {
  std::string name;    // shown in tables
  std::string source;  // "embedded: URL" or the path given
  formats::ModelConfig config;
};

struct CtxResult {
  uint64_t tokens = 0;
  kv::KvBytes bytes;
  std::vector<kv::KindSummary> kinds;
  double ratio_v32 = 0;  // total / V3.2 (with indexer keys, same scheme)
  double ratio_gqa = 0;  // total / GQA baseline (bf16)
};

struct Evaluation {
  const Model* model = nullptr;
  kv::Scheme scheme = kv::Scheme::bf16;
  kv::KvLayout layout;
  std::vector<CtxResult> ctx;
};

// ------------------------------------------------------------------------------ arguments

Result<std::vector<kv::Scheme>> parse_schemes(const std::vector<std::string>& raw) {
  std::vector<kv::Scheme> out;
  auto add = [&](kv::Scheme s) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  if (raw.empty()) {
    add(kv::Scheme::bf16);
    add(kv::Scheme::official);
    return out;
  }
  for (const std::string& item : raw) {
    size_t pos = 0;
    for (;;) {
      size_t comma = item.find(',', pos);
      std::string_view name = std::string_view(item).substr(
          pos, comma == std::string::npos ? std::string::npos : comma - pos);
      auto s = kv::parse_scheme(name);
      if (!s.ok()) return s.status().with_context("--scheme");
      add(*s);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  return out;
}

Result<std::vector<uint64_t>> parse_contexts(const std::string& text) {
  auto v = parse_count_list(text);
  if (!v.ok()) return v.status().with_context("--ctx");
  std::vector<uint64_t> out = *v;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<std::vector<Model>> load_models(const std::vector<std::string>& paths) {
  std::vector<Model> out;
  if (paths.empty()) {
    for (const kv::EmbeddedConfig& e : kv::embedded_configs()) {
      DSV4_ASSIGN_OR_RETURN(formats::ModelConfig c, kv::load_embedded_config(e.name));
      out.push_back({std::string(e.name), "embedded: " + std::string(e.source), std::move(c)});
    }
    return out;
  }
  for (const std::string& p : paths) {
    DSV4_ASSIGN_OR_RETURN(formats::ModelConfig c, formats::load_model_config(p));
    out.push_back({p, p, std::move(c)});
  }
  return out;
}

// ------------------------------------------------------------------------------ evaluation

Result<kv::KvBytes> reference_bytes(std::string_view name, kv::Scheme scheme, uint64_t n,
                                    bool mtp) {
  DSV4_ASSIGN_OR_RETURN(formats::ModelConfig c, kv::load_embedded_config(name));
  DSV4_ASSIGN_OR_RETURN(kv::KvLayout l, kv::make_layout(c, scheme, {.include_mtp = mtp}));
  return kv::context_bytes(l, n);
}

Result<std::vector<Evaluation>> evaluate(const std::vector<Model>& models,
                                         const std::vector<kv::Scheme>& schemes,
                                         const std::vector<uint64_t>& ctx, bool mtp) {
  std::vector<Evaluation> out;
  for (const Model& m : models) {
    for (kv::Scheme s : schemes) {
      Evaluation e;
      e.model = &m;
      e.scheme = s;
      auto layout = kv::make_layout(m.config, s, {.include_mtp = mtp});
      if (!layout.ok()) return layout.status();
      e.layout = std::move(*layout);
      for (uint64_t n : ctx) {
        CtxResult r;
        r.tokens = n;
        auto bytes = kv::context_bytes(e.layout, n);
        if (!bytes.ok()) return bytes.status().with_context(m.name);
        r.bytes = *bytes;
        DSV4_ASSIGN_OR_RETURN(r.kinds, kv::summarize_by_kind(e.layout, n));
        DSV4_ASSIGN_OR_RETURN(kv::KvBytes v32, reference_bytes(kv::kDeepSeekV32, s, n, mtp));
        DSV4_ASSIGN_OR_RETURN(kv::KvBytes gqa,
                              reference_bytes(kv::kGqaBaseline, kv::Scheme::bf16, n, mtp));
        r.ratio_v32 = static_cast<double>(r.bytes.total()) / static_cast<double>(v32.total());
        r.ratio_gqa = static_cast<double>(r.bytes.total()) / static_cast<double>(gqa.total());
        e.ctx.push_back(std::move(r));
      }
      out.push_back(std::move(e));
    }
  }
  return out;
}

// ------------------------------------------------------------------------------ formatting

std::string trim_number(double v, int decimals) {
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

// Sizes in tables: GiB with 3 decimals; small sizes in the unit that keeps 3 digits.
std::string size_text(uint64_t bytes) {
  const double gib = static_cast<double>(bytes) / kGiB;
  if (gib >= 0.1 && gib < 1024) return fmt::format("{:.3f} GiB", gib);
  return format_bytes(static_cast<double>(bytes));
}

std::string percent(double r) {
  return fmt::format("{:.1f}%", r * 100.0);
}

std::string short_kind(kv::LayerKind k) {
  switch (k) {
    case kv::LayerKind::sliding_window:
      return "SWA";
    case kv::LayerKind::csa:
      return "CSA";
    case kv::LayerKind::hca:
      return "HCA";
    case kv::LayerKind::mla:
      return "MLA";
    case kv::LayerKind::mla_indexer:
      return "MLA+idx";
    case kv::LayerKind::gqa:
      return "GQA";
    case kv::LayerKind::gqa_sliding:
      return "GQA-SWA";
  }
  return "?";
}

std::string composition(const std::vector<kv::KindSummary>& kinds) {
  std::string s;
  for (const auto& k : kinds) {
    if (!s.empty()) s += " + ";
    s += fmt::format("{} {}", k.layers, short_kind(k.kind));
  }
  return s;
}

std::string records_text(const kv::LayerLayout& l) {
  std::vector<std::string> parts;
  if (l.window > 0 && !l.raw_every_token)
    parts.push_back(
        fmt::format("{} x {}", l.window, format_bytes(static_cast<double>(l.raw_token_bytes))));
  if (l.raw_every_token)
    parts.push_back("kv " + format_bytes(static_cast<double>(l.raw_token_bytes)));
  if (l.compress_ratio > 0)
    parts.push_back(fmt::format(
        "kv {}/{}", format_bytes(static_cast<double>(l.compressed_entry_bytes)), l.compress_ratio));
  if (l.indexer_ratio > 0)
    parts.push_back(l.indexer_ratio == 1
                        ? "key " + format_bytes(static_cast<double>(l.indexer_key_bytes))
                        : fmt::format("key {}/{}",
                                      format_bytes(static_cast<double>(l.indexer_key_bytes)),
                                      l.indexer_ratio));
  if (l.compressor_state_bytes > 0)
    parts.push_back("state " + format_bytes(static_cast<double>(l.compressor_state_bytes)));
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ", ") + p;
  return s;
}

bool has_per_token_indexer(const Evaluation& e) {
  return e.model->config.family == formats::ModelFamily::deepseek_v32;
}

void print_table(const std::vector<Evaluation>& evals, const std::vector<kv::Scheme>& schemes,
                 const std::vector<uint64_t>& ctx, bool per_layer, bool mtp) {
  std::string out;
  out += fmt::format(
      "KV cache of one sequence ({}; sizes include the sliding-window ring and the "
      "compressor state)\n",
      mtp ? "main + MTP layers" : "main layers");
  const std::string last = format_count(ctx.back());
  for (kv::Scheme s : schemes) {
    // Column widths from the content.
    struct Row {
      std::string name, layers, bpt;
      std::vector<std::string> sizes;
      std::string v32, gqa;
    };
    std::vector<Row> rows;
    for (const Evaluation& e : evals) {
      if (e.scheme != s) continue;
      const CtxResult& lastc = e.ctx.back();
      Row r;
      r.name = e.model->name;
      r.layers = composition(lastc.kinds);
      r.bpt = trim_number(kv::bytes_per_token(e.layout), 2);
      for (const CtxResult& c : e.ctx) r.sizes.push_back(size_text(c.bytes.total()));
      r.v32 = percent(lastc.ratio_v32);
      r.gqa = percent(lastc.ratio_gqa);
      rows.push_back(r);
      if (has_per_token_indexer(e)) {
        // V3.2 without its indexer keys: the MLA cache alone.
        Row w;
        w.name = e.model->name + " (no indexer)";
        w.layers = fmt::format("{} MLA", lastc.kinds.empty() ? 0 : lastc.kinds[0].layers);
        w.bpt = trim_number(kv::bytes_per_token(e.layout, /*with_indexer=*/false), 2);
        for (const CtxResult& c : e.ctx) w.sizes.push_back(size_text(c.bytes.without_indexer()));
        w.v32 = percent(lastc.ratio_v32 * static_cast<double>(lastc.bytes.without_indexer()) /
                        static_cast<double>(lastc.bytes.total()));
        w.gqa = percent(lastc.ratio_gqa * static_cast<double>(lastc.bytes.without_indexer()) /
                        static_cast<double>(lastc.bytes.total()));
        rows.push_back(w);
      }
      if (per_layer) {
        for (size_t k = 0; k < lastc.kinds.size(); ++k) {
          const kv::KindSummary& ks = lastc.kinds[k];
          Row p;
          p.name = fmt::format("  {} x {}", ks.layers, kv::layer_kind_name(ks.kind));
          p.layers = records_text(ks.first);
          p.bpt = trim_number(ks.bytes_per_token, 2);
          for (const CtxResult& c : e.ctx) p.sizes.push_back(size_text(c.kinds[k].bytes.total()));
          rows.push_back(p);
        }
      }
    }
    Row head;
    head.name = "model";
    head.layers = per_layer ? "layers / records" : "layers";
    head.bpt = "B/token";
    for (uint64_t n : ctx) head.sizes.push_back(format_count(n));
    head.v32 = "vs V3.2@" + last;
    head.gqa = "vs GQA@" + last;
    size_t wn = head.name.size(), wl = head.layers.size(), wb = head.bpt.size();
    size_t wv = head.v32.size(), wg = head.gqa.size();
    std::vector<size_t> ws(ctx.size(), 0);
    for (const Row* r : [&] {
           std::vector<const Row*> all{&head};
           for (const Row& x : rows) all.push_back(&x);
           return all;
         }()) {
      wn = std::max(wn, r->name.size());
      wl = std::max(wl, r->layers.size());
      wb = std::max(wb, r->bpt.size());
      wv = std::max(wv, r->v32.size());
      wg = std::max(wg, r->gqa.size());
      for (size_t i = 0; i < r->sizes.size(); ++i) ws[i] = std::max(ws[i], r->sizes[i].size());
    }
    auto line = [&](const Row& r) {
      std::string l = fmt::format("{:<{}}  {:<{}}  {:>{}}", r.name, wn, r.layers, wl, r.bpt, wb);
      for (size_t i = 0; i < ws.size(); ++i)
        l += fmt::format("  {:>{}}", i < r.sizes.size() ? r.sizes[i] : "", ws[i]);
      l += fmt::format("  {:>{}}  {:>{}}", r.v32, wv, r.gqa, wg);
      while (!l.empty() && l.back() == ' ') l.pop_back();
      return l + "\n";
    };
    out += fmt::format("\n{}: {}\n", kv::scheme_name(s), kv::scheme_description(s));
    out += line(head);
    for (const Row& r : rows) out += line(r);
  }
  out += fmt::format(
      "\nB/token: bytes each further token adds (compressed entries and indexer keys spread over "
      "their ratio).\nSizes: exact bytes for N tokens, GiB = 2^30 B. vs V3.2: DeepSeek-V3.2 with "
      "indexer keys, same scheme.\nvs GQA: bf16 baseline of 61 layers x 8 KV heads x 128 dims.\n");
  std::fputs(out.c_str(), stdout);
}

nlohmann::ordered_json bytes_json(const kv::KvBytes& b) {
  nlohmann::ordered_json j;
  j["bytes"] = b.total();
  j["gib"] = static_cast<double>(b.total()) / kGiB;
  j["window_bytes"] = b.window;
  j["raw_kv_bytes"] = b.raw_kv;
  j["compressed_bytes"] = b.compressed;
  j["indexer_bytes"] = b.indexer;
  j["compressor_state_bytes"] = b.compressor_state;
  j["bytes_without_indexer"] = b.without_indexer();
  j["gib_without_indexer"] = static_cast<double>(b.without_indexer()) / kGiB;
  return j;
}

std::string to_json(const std::vector<Evaluation>& evals, const std::vector<Model>& models,
                    const std::vector<kv::Scheme>& schemes, const std::vector<uint64_t>& ctx,
                    bool mtp) {
  using J = nlohmann::ordered_json;
  J root;
  root["description"] =
      "KV cache bytes of one sequence after N tokens. bytes = window_bytes + raw_kv_bytes + "
      "compressed_bytes + indexer_bytes + compressor_state_bytes. window_bytes: raw tokens in "
      "sliding-window rings (min(N, window) per layer); compressor_state_bytes: fixed per "
      "sequence; raw_kv/compressed/indexer grow with N (compressed entries: floor(N / ratio)). "
      "bytes_per_token: bytes each further token adds.";
  root["mtp_layers_included"] = mtp;
  root["contexts"] = ctx;
  J sj = J::array();
  for (kv::Scheme s : schemes) sj.push_back(kv::scheme_name(s));
  root["schemes"] = sj;
  root["ratio_to_v32"] = "bytes / DeepSeek-V3.2 bytes (with indexer keys, same scheme, same N)";
  root["ratio_to_gqa"] = "bytes / GQA-baseline bytes (bf16, same N)";
  J jm = J::array();
  for (const Model& m : models) {
    J mj;
    mj["name"] = m.name;
    mj["source"] = m.source;
    mj["model_type"] = m.config.model_type;
    mj["num_hidden_layers"] = m.config.num_hidden_layers;
    J schemes_j = J::array();
    for (const Evaluation& e : evals) {
      if (e.model != &m) continue;
      if (!mj.contains("layer_types")) {
        J lt;
        for (const auto& k : e.ctx.front().kinds)
          lt[std::string(kv::layer_kind_name(k.kind))] = k.layers;
        mj["layer_types"] = lt;
      }
      J ej;
      ej["scheme"] = kv::scheme_name(e.scheme);
      ej["bytes_per_token"] = kv::bytes_per_token(e.layout);
      ej["bytes_per_token_without_indexer"] = kv::bytes_per_token(e.layout, false);
      J rec;
      for (const auto& k : e.ctx.front().kinds) {
        const kv::LayerLayout& l = k.first;
        J r;
        r["layers"] = k.layers;
        r["compress_ratio"] = l.compress_ratio;
        r["window"] = l.window;
        r["raw_token_bytes"] = l.raw_token_bytes;
        r["raw_every_token"] = l.raw_every_token;
        r["compressed_entry_bytes"] = l.compressed_entry_bytes;
        r["indexer_key_bytes"] = l.indexer_key_bytes;
        r["indexer_ratio"] = l.indexer_ratio;
        r["compressor_state_bytes"] = l.compressor_state_bytes;
        r["bytes_per_token_per_layer"] = kv::layer_bytes_per_token(l);
        rec[std::string(kv::layer_kind_name(k.kind))] = r;
      }
      ej["records"] = rec;
      J cj = J::array();
      for (const CtxResult& c : e.ctx) {
        J x;
        x["tokens"] = c.tokens;
        x.update(bytes_json(c.bytes));
        x["bytes_per_token"] = kv::bytes_per_token(e.layout);
        x["average_bytes_per_token"] =
            c.tokens == 0 ? 0.0
                          : static_cast<double>(c.bytes.total()) / static_cast<double>(c.tokens);
        x["ratio_to_v32"] = c.ratio_v32;
        x["ratio_to_gqa"] = c.ratio_gqa;
        J by;
        for (const auto& k : c.kinds) {
          J kj;
          kj["layers"] = k.layers;
          kj.update(bytes_json(k.bytes));
          kj["bytes_per_token"] = k.bytes_per_token;
          by[std::string(kv::layer_kind_name(k.kind))] = kj;
        }
        x["by_layer_type"] = by;
        cj.push_back(x);
      }
      ej["contexts"] = cj;
      schemes_j.push_back(ej);
    }
    mj["schemes"] = schemes_j;
    jm.push_back(mj);
  }
  root["models"] = jm;
  // Model names come from paths (bytes, maybe not UTF-8): replace rather than throw.
  return root.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

std::string to_csv(const std::vector<Evaluation>& evals, bool per_layer) {
  std::string out =
      "model,scheme,tokens,layer_type,layers,bytes,gib,bytes_per_token,window_bytes,raw_kv_bytes,"
      "compressed_bytes,indexer_bytes,compressor_state_bytes,bytes_without_indexer,ratio_to_v32,"
      "ratio_to_gqa\n";
  auto row = [&](const Evaluation& e, uint64_t n, std::string_view type, int layers,
                 const kv::KvBytes& b, double bpt, std::string v32, std::string gqa) {
    out +=
        fmt::format("{},{},{},{},{},{},{:.6f},{},{},{},{},{},{},{},{},{}\n",
                    csv_field(e.model->name), kv::scheme_name(e.scheme), n, type, layers, b.total(),
                    static_cast<double>(b.total()) / kGiB, trim_number(bpt, 6), b.window, b.raw_kv,
                    b.compressed, b.indexer, b.compressor_state, b.without_indexer(), v32, gqa);
  };
  for (const Evaluation& e : evals) {
    for (const CtxResult& c : e.ctx) {
      row(e, c.tokens, "all", static_cast<int>(e.layout.layers.size()), c.bytes,
          kv::bytes_per_token(e.layout), fmt::format("{:.6f}", c.ratio_v32),
          fmt::format("{:.6f}", c.ratio_gqa));
      if (per_layer) {
        for (const auto& k : c.kinds)
          row(e, c.tokens, kv::layer_kind_name(k.kind), k.layers, k.bytes, k.bytes_per_token, "",
              "");
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------------------ SVG plot

// KV GiB against context, both axes logarithmic (sizes span three decades), one polyline per
// model and scheme, sampled at powers of two and at every requested context (marked).
Result<std::string> to_svg(const std::vector<Model>& models, const std::vector<kv::Scheme>& schemes,
                           const std::vector<uint64_t>& ctx, bool mtp) {
  const double W = 1000, H = 620, L = 90, R = 330, T = 60, B = 70;
  const double pw = W - L - R, ph = H - T - B;
  uint64_t xmin = std::min<uint64_t>(ctx.front(), 1024);
  uint64_t xmax = std::max<uint64_t>(ctx.back(), 2 * xmin);
  std::vector<uint64_t> xs(ctx.begin(), ctx.end());
  xs.push_back(xmin);
  xs.push_back(xmax);
  for (int p = 0; p < 64; ++p) {
    uint64_t v = uint64_t{1} << p;
    if (v >= xmin && v <= xmax) xs.push_back(v);
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());

  struct Series {
    std::string label;
    size_t model = 0;
    kv::Scheme scheme = kv::Scheme::bf16;
    std::vector<double> gib;  // per xs
  };
  std::vector<Series> series;
  double ymin_v = 1e300, ymax_v = 0;
  for (size_t mi = 0; mi < models.size(); ++mi) {
    for (kv::Scheme s : schemes) {
      DSV4_ASSIGN_OR_RETURN(kv::KvLayout l,
                            kv::make_layout(models[mi].config, s, {.include_mtp = mtp}));
      Series se;
      se.label = models[mi].name + " · " + std::string(kv::scheme_name(s));
      se.model = mi;
      se.scheme = s;
      for (uint64_t x : xs) {
        DSV4_ASSIGN_OR_RETURN(kv::KvBytes b, kv::context_bytes(l, x));
        double g = static_cast<double>(b.total()) / kGiB;
        se.gib.push_back(g);
        if (g > 0) ymin_v = std::min(ymin_v, g);
        ymax_v = std::max(ymax_v, g);
      }
      series.push_back(std::move(se));
    }
  }
  if (ymax_v <= 0) ymax_v = 1, ymin_v = 0.1;
  const double ly0 = std::floor(std::log10(ymin_v));
  double ly1 = std::ceil(std::log10(ymax_v));
  if (ly1 <= ly0) ly1 = ly0 + 1;
  const double lx0 = std::log2(static_cast<double>(xmin)),
               lx1 = std::log2(static_cast<double>(xmax));
  auto px = [&](double x) { return L + (std::log2(x) - lx0) / (lx1 - lx0) * pw; };
  auto py = [&](double g) {
    double lg = g > 0 ? std::log10(g) : ly0;
    return T + ph - (std::max(lg, ly0) - ly0) / (ly1 - ly0) * ph;
  };

  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                  "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  auto dash = [](kv::Scheme s) -> std::string {
    switch (s) {
      case kv::Scheme::bf16:
        return "";
      case kv::Scheme::official:
        return " stroke-dasharray=\"9 5\"";
      case kv::Scheme::f32:
        return " stroke-dasharray=\"2 4\"";
    }
    return "";
  };

  std::string o = svg_begin(W, H);
  o += fmt::format(
      "<text x=\"{}\" y=\"30\" font-size=\"17\" font-weight=\"bold\" "
      "text-anchor=\"middle\">KV cache of one sequence vs context length</text>\n",
      L + pw / 2);
  o += svg_loglog_axes(L, T, pw, ph, xmin, xmax, ly0, ly1, px, py, [](double v, double e) {
    return trim_number(v, e < 0 ? static_cast<int>(-e) : 0);
  });
  o += fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">context length (tokens, log "
      "scale; K = 1024)</text>\n",
      L + pw / 2, H - 22);
  o += fmt::format(
      "<text x=\"22\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 22 "
      "{0})\">KV cache (GiB, log scale)</text>\n",
      T + ph / 2);
  // Series.
  for (size_t si = 0; si < series.size(); ++si) {
    const Series& se = series[si];
    const char* color = kColors[se.model % (sizeof(kColors) / sizeof(kColors[0]))];
    std::string pts;
    for (size_t i = 0; i < xs.size(); ++i)
      pts += fmt::format("{}{:.1f},{:.1f}", i ? " " : "", px(static_cast<double>(xs[i])),
                         py(se.gib[i]));
    o += fmt::format(
        "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} "
        "points=\"{}\"><title>{}</title></polyline>\n",
        color, dash(se.scheme), pts, xml_escape(se.label));
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!std::binary_search(ctx.begin(), ctx.end(), xs[i])) continue;
      o += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n",
                       px(static_cast<double>(xs[i])), py(se.gib[i]), color);
    }
  }
  // Legend.
  const double lx = L + pw + 20;
  o += fmt::format("<text x=\"{}\" y=\"{}\" font-weight=\"bold\">model · scheme</text>\n", lx,
                   T + 4);
  for (size_t si = 0; si < series.size(); ++si) {
    const Series& se = series[si];
    const double y = T + 24 + 20 * static_cast<double>(si);
    const char* color = kColors[se.model % (sizeof(kColors) / sizeof(kColors[0]))];
    o += fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\" "
        "stroke-width=\"2\"{}/>\n",
        lx, y - 4, lx + 28, y - 4, color, dash(se.scheme));
    o += fmt::format("<text class=\"legend\" x=\"{}\" y=\"{:.1f}\">{}</text>\n", lx + 36, y,
                     xml_escape(se.label));
  }
  o += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#555555\">dots: requested "
      "contexts; solid bf16, dashed official, dotted f32</text>\n",
      L, T - 10);
  o += "</svg>\n";
  return o;
}

// ------------------------------------------------------------------------------ command

// ------------------------------------------------------------------------------ --measure

nlohmann::ordered_json measured_json(const kv::KvBytes& predicted, const kv::KvBytes& allocated,
                                     uint64_t reserved) {
  nlohmann::ordered_json j;
  j["predicted_bytes"] = predicted.total();
  j["allocated_bytes"] = allocated.total();
  j["reserved_bytes"] = reserved;
  j["parts"] = {
      {"window", {{"predicted_bytes", predicted.window}, {"allocated_bytes", allocated.window}}},
      {"compressed",
       {{"predicted_bytes", predicted.compressed}, {"allocated_bytes", allocated.compressed}}},
      {"indexer", {{"predicted_bytes", predicted.indexer}, {"allocated_bytes", allocated.indexer}}},
      {"compressor_state",
       {{"predicted_bytes", predicted.compressor_state},
        {"allocated_bytes", allocated.compressor_state}}}};
  return j;
}

void add_into(kv::KvBytes& a, const kv::KvBytes& b) {
  a.window += b.window;
  a.raw_kv += b.raw_kv;
  a.compressed += b.compressed;
  a.indexer += b.indexer;
  a.compressor_state += b.compressor_state;
}

// Builds a real cache of N tokens per context (a forward pass over deterministic pseudo-random
// tokens, or synthetic rows with --no-compute) and prints predicted vs allocated bytes.
int run_measure(const Options& opt) {
  const std::string ctx_text = opt.ctx == kDefaultCtx ? std::string("1,128,1000") : opt.ctx;
  auto ctx = parse_contexts(ctx_text);
  if (!ctx.ok()) return report_error(ctx.status());
  kv::Scheme scheme = kv::Scheme::official;
  if (!opt.schemes.empty()) {
    auto schemes = parse_schemes(opt.schemes);
    if (!schemes.ok()) return report_error(schemes.status());
    if (schemes->size() != 1)
      return report_error(invalid_argument("--measure takes one --scheme (f32 or official)"));
    scheme = schemes->front();
  }
  auto model = model::Model::load(opt.measure);
  if (!model.ok()) return report_error(model.status());
  const model::Model& m = **model;
  if (auto probe = m.new_sequence(scheme); !probe.ok()) return report_error(probe.status());
  ThreadPool pool(
      static_cast<int>(std::max(1u, std::min(4u, std::thread::hardware_concurrency()))));
  nlohmann::ordered_json root;
  root["model"] = opt.measure;
  root["scheme"] = std::string(kv::scheme_name(scheme));
  root["mode"] = opt.no_compute ? "synthetic" : "forward";
  root["contexts"] = nlohmann::ordered_json::array();
  bool all_equal = true;
  if (!opt.json)
    std::printf("KV cache of %s, scheme %s, %s\n", opt.measure.c_str(),
                std::string(kv::scheme_name(scheme)).c_str(),
                opt.no_compute ? "synthetic rows (--no-compute)"
                               : "forward pass over pseudo-random tokens");
  for (uint64_t n : *ctx) {
    auto st = m.new_sequence(scheme);
    if (!st.ok()) return report_error(st.status());
    if (opt.no_compute) {
      Status s = kv::fill_synthetic(st->kv, 0, static_cast<int64_t>(n), 1);
      if (!s.ok()) return report_error(s);
    } else {
      std::vector<int32_t> tokens(static_cast<size_t>(n));
      uint64_t x = 0x9E3779B97F4A7C15ull;
      for (int32_t& t : tokens) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        t = static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(m.config().vocab_size));
      }
      Status s = m.forward(tokens, *st, pool, nullptr, false);
      if (!s.ok()) return report_error(s);
    }
    const kv::KvLayout& layout = st->kv.layout();
    auto predicted = kv::context_bytes(layout, n);
    if (!predicted.ok()) return report_error(predicted.status());
    const kv::KvBytes allocated = st->kv.allocated_bytes();
    all_equal = all_equal && allocated.total() == predicted->total();
    nlohmann::ordered_json c{{"tokens", n}};
    c.update(measured_json(*predicted, allocated, st->kv.reserved_bytes()));
    c["checkpoint_bytes"] = st->kv.checkpoint_bytes();
    // Working memory besides the cache (attention workspace + chunk activations); 0 with
    // --no-compute (no forward pass ran).
    const uint64_t transient = st->transient_bytes();
    c["transient_bytes"] = transient;
    if (!opt.json)
      std::printf(
          "\n%llu tokens: predicted %llu B, allocated %llu B (%s), reserved in blocks %llu B\n"
          "  transient (attention workspace + chunk activations): %llu B%s\n"
          "  %-16s %6s %16s %16s\n",
          static_cast<unsigned long long>(n), static_cast<unsigned long long>(predicted->total()),
          static_cast<unsigned long long>(allocated.total()),
          allocated.total() == predicted->total() ? "equal" : "DIFFERENT",
          static_cast<unsigned long long>(st->kv.reserved_bytes()),
          static_cast<unsigned long long>(transient),
          opt.no_compute ? " (no forward pass: --no-compute)" : "", "layer type", "layers",
          "predicted B", "allocated B");
    nlohmann::ordered_json kinds = nlohmann::ordered_json::array();
    std::vector<kv::LayerKind> order;
    for (const kv::LayerLayout& l : layout.layers)
      if (std::find(order.begin(), order.end(), l.kind) == order.end()) order.push_back(l.kind);
    for (kv::LayerKind kind : order) {
      kv::KvBytes p, a;
      uint64_t reserved = 0;
      int layers = 0;
      for (size_t i = 0; i < layout.layers.size(); ++i) {
        if (layout.layers[i].kind != kind) continue;
        auto lb = kv::layer_bytes(layout.layers[i], n);
        if (!lb.ok()) return report_error(lb.status());
        add_into(p, *lb);
        const kv::LayerUsage u = st->kv.usage(static_cast<int>(i));
        add_into(a, u.allocated);
        reserved += u.reserved;
        ++layers;
      }
      nlohmann::ordered_json k{{"kind", std::string(kv::layer_kind_name(kind))},
                               {"layers", layers}};
      k.update(measured_json(p, a, reserved));
      kinds.push_back(k);
      if (!opt.json)
        std::printf("  %-16s %6d %16llu %16llu\n", std::string(kv::layer_kind_name(kind)).c_str(),
                    layers, static_cast<unsigned long long>(p.total()),
                    static_cast<unsigned long long>(a.total()));
    }
    c["layer_types"] = kinds;
    root["contexts"].push_back(c);
  }
  root["all_equal"] = all_equal;
  if (opt.json) std::fputs((root.dump(2) + "\n").c_str(), stdout);
  if (std::fflush(stdout) != 0) return 1;
  if (!all_equal) return report_error(internal_error("allocated bytes differ from the prediction"));
  return 0;
}

int run(const Options& opt) {
  if (opt.json && opt.csv)
    return report_error(invalid_argument("--json and --csv are mutually exclusive"));
  if (opt.no_compute && opt.measure.empty())
    return report_error(invalid_argument("--no-compute needs --measure MODEL_DIR"));
  if (!opt.measure.empty()) {
    if (opt.csv || !opt.plot.empty() || opt.per_layer || opt.mtp || !opt.paths.empty())
      return report_error(
          invalid_argument("--measure takes only --ctx, --scheme, --no-compute and --json"));
    return run_measure(opt);
  }
  auto ctx = parse_contexts(opt.ctx);
  if (!ctx.ok()) return report_error(ctx.status());
  auto schemes = parse_schemes(opt.schemes);
  if (!schemes.ok()) return report_error(schemes.status());
  auto models = load_models(opt.paths);
  if (!models.ok()) return report_error(models.status());
  auto evals = evaluate(*models, *schemes, *ctx, opt.mtp);
  if (!evals.ok()) return report_error(evals.status());

  if (!opt.plot.empty()) {
    auto svg = to_svg(*models, *schemes, *ctx, opt.mtp);
    if (!svg.ok()) return report_error(svg.status());
    const auto* p = reinterpret_cast<const uint8_t*>(svg->data());
    Status st = write_file_atomic(opt.plot, {p, svg->size()});
    if (!st.ok()) return report_error(st.with_context("--plot"));
  }
  if (opt.json) {
    std::string s = to_json(*evals, *models, *schemes, *ctx, opt.mtp);
    std::fputs(s.c_str(), stdout);
  } else if (opt.csv) {
    std::fputs(to_csv(*evals, opt.per_layer).c_str(), stdout);
  } else {
    print_table(*evals, *schemes, *ctx, opt.per_layer, opt.mtp);
    if (!opt.plot.empty()) std::printf("plot written to %s\n", opt.plot.c_str());
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

RunFn setup(CLI::App& app) {
  auto opt = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand(
      "kv", "KV-cache bytes per sequence: DeepSeek-V4 (CSA/HCA) vs V3.2 (MLA) vs GQA");
  sub->add_option("configs", opt->paths,
                  "config.json files or model directories (default: embedded DeepSeek-V3.2, "
                  "V4-Flash, V4-Pro and a bf16 GQA baseline)");
  sub->add_option("--ctx", opt->ctx, "context lengths, comma separated; K/M/G = 1024^n")
      ->default_str(kDefaultCtx)
      ->type_name("LIST");
  sub->add_option("--scheme", opt->schemes,
                  "storage scheme: bf16, f32, official (repeatable or comma list; default "
                  "bf16,official)")
      ->type_name("SCHEME")
      ->expected(1)
      ->allow_extra_args(false)
      ->take_all();
  sub->add_flag("--per-layer", opt->per_layer, "break totals down by layer type");
  sub->add_flag("--json", opt->json, "machine-readable output");
  sub->add_flag("--csv", opt->csv, "CSV output");
  sub->add_option("--plot", opt->plot, "write an SVG plot of KV GiB vs context to FILE")
      ->type_name("FILE");
  sub->add_flag("--mtp", opt->mtp, "include the MTP layers' caches");
  sub->add_option("--measure", opt->measure,
                  "build real KV caches of --ctx tokens (default 1,128,1000) for the model in "
                  "MODEL_DIR and print predicted vs allocated bytes")
      ->type_name("MODEL_DIR");
  sub->add_flag("--no-compute", opt->no_compute,
                "with --measure: fill the cache with synthetic rows instead of a forward pass");
  return [opt, sub]() -> int {
    if (!sub->parsed()) return 0;
    return run(*opt);
  };
}

}  // namespace

DSV4_REGISTER_COMMAND(kv, 10, setup);

}  // namespace dsv4::cli
