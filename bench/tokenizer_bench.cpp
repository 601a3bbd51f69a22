// tokenizer_bench — encode and decode throughput of the DeepSeek-V4 tokenizer on one core.
//
//   build-*/bench/tokenizer_bench [--benchmark_filter=...]
//   DSV4_TOKENIZER=/path/to/tokenizer.json (or model dir) overrides the committed tokenizer.
//
// Inputs (each about 4 MiB, built in memory):
//   english      original prose paragraphs (below) repeated: the common case, word cache warm
//   english_cold random words drawn from letter-frequency-weighted syllables, so most pieces miss
//                the word cache and go through BPE merging: a lower bound for English-like text
//   cjk_code     Chinese and Japanese prose mixed with C++/Python code
// Counters: bytes_per_second = input bytes (encode) or output bytes (decode) per second, from
// the benchmark thread's CPU time (the figure to compare on a shared machine).
// BM_load: time to load the tokenizer from disk.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using dsv4::tokenizer::Tokenizer;

constexpr size_t kTargetBytes = 4u << 20;

// Prose written for this benchmark (not taken from any corpus).
constexpr const char* kEnglish[] = {
    "The morning train to the coast was nearly empty, which was unusual for a Friday in late "
    "June. Maria took a seat by the window and watched the suburbs thin into fields of barley, "
    "then into low hills where sheep stood like scattered stones. She had not been back in "
    "twelve years. Her aunt's letter, folded twice and softened from handling, lay in her lap: "
    "the house was to be sold, and if there was anything she wanted from it, she should come "
    "before the end of the month.\n\n",
    "Engineers like to say that a system is only as reliable as its least tested path. In "
    "practice, the least tested path is usually the one that handles failure: the retry loop "
    "that has never retried, the timeout that has never fired, the fallback that quietly "
    "returns stale data. A useful habit is to ask, for every new feature, \"What happens when "
    "this breaks at 3 a.m., and who will notice?\" If the honest answer is \"nobody, for a "
    "week,\" the feature isn't finished.\n\n",
    "By the time the committee met on Tuesday, the budget had grown from $4.2 million to "
    "nearly $5.9 million, a 40% increase that nobody could fully explain. The chair, a "
    "retired accountant with a fondness for bow ties, asked each department to walk through "
    "its numbers line by line. It took four hours. When they were done, they had found three "
    "duplicated invoices, one contract that had been signed twice, and a spreadsheet formula "
    "that summed a column into itself.\n\n",
    "There is a particular kind of quiet that settles over a library in the hour before it "
    "closes. The students who came to study have mostly gone; the ones who remain are either "
    "very diligent or asleep. Somewhere a cart squeaks as a volunteer reshelves the day's "
    "returns - cookbooks, travel guides, a battered copy of a novel everyone was assigned and "
    "nobody finished. The lights hum. Outside, it's started to rain again.\n\n",
};

constexpr const char* kCjkCode[] = {
    "深度学习模型的推理速度取决于内存带宽和计算能力。在中央处理器上运行大型语言模型时，"
    "权重的量化格式尤其重要：每个参数占用的字节越少，每秒能够读取的参数就越多。"
    "因此，我们使用八位浮点数和四位浮点数来存储权重，并在计算时再转换为单精度浮点数。\n",
    "今日は朝から雨が降っていたので、図書館で一日中本を読んでいました。"
    "午後になって少し晴れてきたので、駅前のカフェでコーヒーを飲みながら、"
    "来週の発表の準備をしました。カタカナの多い技術文書は読みにくいですね。\n",
    "template <typename T>\nstatic void axpy(size_t n, T a, const T* x, T* y) {\n"
    "  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];  // y = a*x + y\n}\n\n",
    "def softmax(xs):\n    m = max(xs)\n    es = [math.exp(x - m) for x in xs]\n"
    "    s = sum(es)\n    return [e / s for e in es]\n\n",
    "설정 파일을 읽는 중 오류가 발생했습니다: config.json 의 \"num_layers\" 값이 올바르지 "
    "않습니다.\n",
};

std::string repeat_to_size(const char* const* parts, size_t n) {
  std::string s;
  while (s.size() < kTargetBytes) {
    for (size_t i = 0; i < n; ++i) s += parts[i];
  }
  return s;
}

std::string cold_english() {
  // Words assembled from syllables; very few repeat, so the word cache rarely helps.
  static const char* syll[] = {"th", "er", "on", "an",  "re",   "he",  "in",  "ed",   "nd", "ha",
                               "at", "en", "es", "of",  "or",   "nt",  "ea",  "ti",   "to", "it",
                               "st", "io", "le", "is",  "ou",   "ar",  "as",  "de",   "rt", "ve",
                               "qu", "ly", "mp", "str", "ight", "ous", "ing", "tion", "b",  "k"};
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> nsyll(1, 5), pick(0, 39), punct(0, 15);
  std::string s;
  while (s.size() < kTargetBytes) {
    int n = nsyll(rng);
    for (int i = 0; i < n; ++i) s += syll[pick(rng)];
    int p = punct(rng);
    s += p == 0 ? ". " : p == 1 ? ", " : p == 2 ? "\n" : " ";
  }
  return s;
}

std::string tokenizer_path() {
  const char* env = std::getenv("DSV4_TOKENIZER");
  return env ? env
             : (std::filesystem::path(__FILE__).parent_path() / ".." / "tests" / "data" /
                "tokenizer")
                   .string();
}

const Tokenizer& tokenizer() {
  static const Tokenizer* tok = [] {
    auto r = Tokenizer::load(tokenizer_path());
    if (!r.ok()) {
      std::fprintf(stderr, "tokenizer_bench: %s\n", r.status().to_string().c_str());
      std::exit(1);
    }
    return new Tokenizer(std::move(r).value());
  }();
  return *tok;
}

const std::string& input(int which) {
  static const std::string english = repeat_to_size(kEnglish, std::size(kEnglish));
  static const std::string cold = cold_english();
  static const std::string cjk = repeat_to_size(kCjkCode, std::size(kCjkCode));
  return which == 0 ? english : which == 1 ? cold : cjk;
}

void BM_encode(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  const std::string& text = input(static_cast<int>(state.range(0)));
  size_t n_ids = 0;
  for (auto _ : state) {
    auto ids = tok.encode(text);
    if (!ids.ok()) {
      state.SkipWithError(ids.status().to_string().c_str());
      return;
    }
    n_ids = ids->size();
    benchmark::DoNotOptimize(ids->data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(n_ids);
}

void BM_decode(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  const std::string& text = input(static_cast<int>(state.range(0)));
  auto ids = tok.encode(text);
  if (!ids.ok()) {
    state.SkipWithError(ids.status().to_string().c_str());
    return;
  }
  for (auto _ : state) {
    auto out = tok.decode(*ids);
    benchmark::DoNotOptimize(out.ok());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

// Loading tokenizer.json (6.4 MB for DeepSeek-V4): parse, vocabulary, merge table, regexes.
void BM_load(benchmark::State& state) {
  const std::string path = tokenizer_path();
  for (auto _ : state) {
    auto r = Tokenizer::load(path);
    if (!r.ok()) {
      state.SkipWithError(r.status().to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(r->vocab_size());
  }
}

void inputs(benchmark::internal::Benchmark* b) {
  b->ArgName("input")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
}

}  // namespace

// input: 0 = english, 1 = english_cold, 2 = cjk_code
BENCHMARK(BM_encode)->Apply(inputs);
BENCHMARK(BM_decode)->Apply(inputs);
BENCHMARK(BM_load)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
