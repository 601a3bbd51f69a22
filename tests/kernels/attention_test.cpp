// Tests for kernels/attention.h: the record layout against kv/layout.h, the _ref twin against an
// independent double-precision evaluation, every ISA variant against _ref on awkward shapes,
// key splitting + merge, the sink, and the AttnState edge cases.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "harness.h"
#include "kernels/codecs.h"
#include "kernels/dispatch.h"
#include "kv/layout.h"  // header-only use (sizeof/offsetof): kernels_test does not link dsv4_kv

namespace dsv4::kernels {
namespace {

using testing::isa_label;
using testing::max_rel_error;
using testing::random_floats;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Restores the active tier after tests that call the dispatching entry points.
struct IsaGuard {
  Isa saved = active_isa();
  ~IsaGuard() { set_active_isa_for_testing(saved); }
};

// Records built like kv/record_codec.h encode_v4_entry (the official act_quant with ue8m0
// scales, block 64; bf16 RoPE dims) from the kernels' own block quantizer, since kernels_test
// does not link dsv4_kv. Each 64-dim block gets its own magnitude (2^-4 .. 2^3) so that the
// scales differ between blocks and records.
struct V4Records {
  V4RecordDims dims;
  std::vector<uint8_t> bytes;        // [n, record_bytes]
  std::vector<const uint8_t*> ptrs;  // shuffled order: keys are read through pointers
  std::vector<float> source;         // [n, head_dim] the f32 rows before quantization
};

void encode_record(const float* x, V4RecordDims d, uint8_t* rec) {
  const size_t nope = d.nope();
  std::vector<float> scales(d.n_scales());
  quantize_f8e4m3_blocks(x, nope, 64, /*pow2_scales=*/true, rec, scales.data());
  for (size_t i = 0; i < d.rope_dim; ++i) {
    const uint16_t h = encode_bf16(x[nope + i]);
    std::memcpy(rec + nope + 2 * i, &h, 2);
  }
  uint8_t* sc = rec + nope + 2 * d.rope_dim;
  std::memset(sc, 0, d.record_bytes() - nope - 2 * d.rope_dim);
  for (size_t b = 0; b < d.n_scales(); ++b) sc[b] = encode_ue8m0(scales[b]);
}

V4Records make_records(size_t n, V4RecordDims d, uint64_t seed) {
  V4Records r;
  r.dims = d;
  r.source = random_floats(n * d.head_dim, seed);
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);
  for (size_t j = 0; j < n; ++j)
    for (size_t b = 0; b * 64 < d.head_dim; ++b) {
      const float mag = std::ldexp(1.0f, static_cast<int>(rng() % 8) - 4);
      for (size_t i = b * 64; i < std::min(d.head_dim, b * 64 + 64); ++i)
        r.source[j * d.head_dim + i] *= mag;
    }
  const size_t rb = d.record_bytes();
  r.bytes.resize(n * rb);
  for (size_t j = 0; j < n; ++j) encode_record(&r.source[j * d.head_dim], d, &r.bytes[j * rb]);
  std::vector<size_t> order(n);
  for (size_t j = 0; j < n; ++j) order[j] = j;
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t j : order) r.ptrs.push_back(&r.bytes[j * rb]);
  return r;
}

std::vector<uint16_t> make_latents(size_t n, size_t key_dim, uint64_t seed) {
  const std::vector<float> x = random_floats(n * key_dim, seed, -2.f, 2.f);
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = encode_bf16(x[i]);
  return out;
}

std::vector<float> finish(const AttnState& st, const float* sink) {
  std::vector<float> out(st.n_heads * st.dim);
  attn_state_finish(st, sink, out.data());
  return out;
}

// Tolerance for two evaluations of the same attention that differ only in the order of f32
// additions (tiles, SIMD lanes, VDPBF16PS pairs) and in exp implementations (~1 ulp). Every
// product bf16(q)·k is exact in f32, so the scores differ only by the rounding of a key_dim-term
// sum: a worst-case bound key_dim·u·scale·sum|q·k| is ~1e-2 on this data (|q| <= 4, |k| <= 8)
// and would hide real bugs, but the roundings are independent and add like a random walk:
// |Δs| ~ sqrt(key_dim)·u·|partial sums| ~ 22·6e-8·10 ~ 1.3e-5 at most, and an output (a convex
// combination of values) moves by <= 2·max|Δs|·max|v|/max|out| ~ 2e-5 relative, plus the
// n_keys-term sums l and acc (sqrt(1000)·u ~ 2e-6). Measured worst case over all cases below:
// 4.7e-6 (AVX-512 and AVX2 alike). A dropped dim or key moves scores by ~0.1, far above this.
constexpr double kReassocTol = 2.5e-5;  // relative to max|ref out|

// ---------------------------------------------------------------------------------------------
// Layout and decoding
// ---------------------------------------------------------------------------------------------
TEST(Attention, RecordLayoutMatchesKvLayout) {
  const V4RecordDims d{512, 64};
  EXPECT_EQ(d.record_bytes(), sizeof(kv::record::V4KvEntryFp8));
  EXPECT_EQ(d.nope(), offsetof(kv::record::V4KvEntryFp8, rope));
  EXPECT_EQ(d.nope() + 2 * d.rope_dim, offsetof(kv::record::V4KvEntryFp8, scale));
  EXPECT_EQ(d.n_scales(), sizeof(kv::record::V4KvEntryFp8::scale));
  EXPECT_EQ((V4RecordDims{128, 64}.record_bytes()), 64u + 128u + 8u);
}

// decode_v4_record_ref equals the act_quant "fake" values (an independent path through the
// quantizer) on the nope dims and bf16 rounding on the RoPE dims, bit for bit.
TEST(Attention, DecodeRecordMatchesCodecs) {
  for (const V4RecordDims d : {V4RecordDims{512, 64}, V4RecordDims{128, 64}}) {
    const V4Records r = make_records(17, d, 11);
    const size_t rb = d.record_bytes();
    for (size_t j = 0; j < 17; ++j) {
      std::vector<float> expect(r.source.begin() + static_cast<ptrdiff_t>(j * d.head_dim),
                                r.source.begin() + static_cast<ptrdiff_t>((j + 1) * d.head_dim));
      fake_quantize_f8e4m3_blocks(expect.data(), d.nope(), 64, true);
      for (size_t i = d.nope(); i < d.head_dim; ++i)
        expect[i] = decode_bf16(encode_bf16(expect[i]));
      std::vector<float> got(d.head_dim);
      decode_v4_record_ref(&r.bytes[j * rb], d, got.data());
      for (size_t i = 0; i < d.head_dim; ++i) ASSERT_EQ(got[i], expect[i]) << j << " " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// _ref against an independent double-precision softmax with sink
// ---------------------------------------------------------------------------------------------
TEST(Attention, RefMatchesDoubleSoftmaxWithSink) {
  const V4RecordDims d{128, 64};
  const size_t H = 3, n = 129;
  const V4Records r = make_records(n, d, 5);
  const std::vector<float> q = random_floats(H * d.head_dim, 6, -3.f, 3.f);
  const std::vector<float> sink = {-1.0f, 0.5f, 3.0f};
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  AttnState st;
  st.reset(H, d.head_dim);
  attend_v4_fp8_ref(q.data(), H, d, r.ptrs.data(), n, scale, st);
  const std::vector<float> out = finish(st, sink.data());
  std::vector<float> k(n * d.head_dim);
  for (size_t j = 0; j < n; ++j) decode_v4_record_ref(r.ptrs[j], d, &k[j * d.head_dim]);
  for (size_t h = 0; h < H; ++h) {
    std::vector<double> s(n);
    double m = sink[h];
    for (size_t j = 0; j < n; ++j) {
      double dot = 0;
      for (size_t i = 0; i < d.head_dim; ++i)
        dot += static_cast<double>(decode_bf16(encode_bf16(q[h * d.head_dim + i]))) *
               k[j * d.head_dim + i];
      s[j] = dot * scale;
      m = std::max(m, s[j]);
    }
    double den = std::exp(sink[h] - m);
    for (size_t j = 0; j < n; ++j) den += std::exp(s[j] - m);
    for (size_t i = 0; i < d.head_dim; ++i) {
      double o = 0;
      for (size_t j = 0; j < n; ++j) o += std::exp(s[j] - m) / den * k[j * d.head_dim + i];
      // f32 evaluation of the same sums: well inside 1e-5 of the largest value (|v| <= 8).
      EXPECT_NEAR(out[h * d.head_dim + i], o, 1e-5 * 8) << h << " " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AttnState bookkeeping
// ---------------------------------------------------------------------------------------------
TEST(Attention, EmptyStateAndEmptyCalls) {
  const V4RecordDims d{128, 64};
  AttnState st;
  st.reset(3, d.head_dim);
  const std::vector<float> q = random_floats(3 * d.head_dim, 1);
  const IsaGuard guard;
  for (Isa isa : supported_isas()) {
    set_active_isa_for_testing(isa);
    attend_v4_fp8(q.data(), 3, d, nullptr, 0, 0.1f, st);  // no keys: unchanged
  }
  for (size_t h = 0; h < 3; ++h) {
    EXPECT_EQ(st.m[h], kNegInf);
    EXPECT_EQ(st.l[h], 0.0f);
  }
  const std::vector<float> sink = {0.f, 1.f, -1.f};
  for (float x : finish(st, sink.data())) EXPECT_EQ(x, 0.0f);
  for (float x : finish(st, nullptr)) EXPECT_EQ(x, 0.0f);

  // Merging empty into non-empty and non-empty into empty.
  const V4Records r = make_records(7, d, 2);
  AttnState full;
  full.reset(3, d.head_dim);
  attend_v4_fp8_ref(q.data(), 3, d, r.ptrs.data(), 7, 0.1f, full);
  AttnState a = full;
  AttnState empty;
  empty.reset(3, d.head_dim);
  attn_state_merge(a, empty);
  EXPECT_EQ(finish(a, sink.data()), finish(full, sink.data()));
  attn_state_merge(empty, full);
  EXPECT_EQ(finish(empty, sink.data()), finish(full, sink.data()));
}

TEST(Attention, SinkLimits) {
  const V4RecordDims d{128, 64};
  const size_t H = 3, n = 17;
  const V4Records r = make_records(n, d, 3);
  const std::vector<float> q = random_floats(H * d.head_dim, 4);
  AttnState st;
  st.reset(H, d.head_dim);
  attend_v4_fp8_ref(q.data(), H, d, r.ptrs.data(), n, 0.1f, st);
  // A very negative sink contributes exp(sink - m) = 0: plain softmax, bit for bit.
  const std::vector<float> very_negative(H, -1e30f), minus_inf(H, kNegInf);
  EXPECT_EQ(finish(st, very_negative.data()), finish(st, nullptr));
  EXPECT_EQ(finish(st, minus_inf.data()), finish(st, nullptr));
  // A sink far above every score takes all the mass: the output is ~0 (<= e^-100 of max|v|).
  std::vector<float> large(H);
  for (size_t h = 0; h < H; ++h) large[h] = st.m[h] + 100.0f;
  for (float x : finish(st, large.data())) EXPECT_LE(std::fabs(x), 1e-30f);
  std::vector<float> huge(H, 1e30f);  // exp(sink - m) overflows without the rescaling
  for (float x : finish(st, huge.data())) EXPECT_EQ(x, 0.0f);
  // sink == score of every key and one key: weight 1/2.
  AttnState one;
  one.reset(1, d.head_dim);
  attend_v4_fp8_ref(q.data(), 1, d, r.ptrs.data(), 1, 0.1f, one);
  const std::vector<float> out_plain = finish(one, nullptr), out_half = finish(one, &one.m[0]);
  for (size_t i = 0; i < d.head_dim; ++i) EXPECT_EQ(out_half[i], out_plain[i] * 0.5f);
}

// ---------------------------------------------------------------------------------------------
// ISA variants against _ref
// ---------------------------------------------------------------------------------------------
using V4Fn = void (*)(const float*, size_t, V4RecordDims, const uint8_t* const*, size_t, float,
                      AttnState&, AttnScratch*);
using MlaFn = void (*)(const float*, size_t, size_t, size_t, const uint16_t*, size_t, float,
                       AttnState&, AttnScratch*);

V4Fn v4_variant(Isa isa) {
  return DSV4_ISA_VARIANT(isa, attend_v4_fp8);
}
MlaFn mla_variant(Isa isa) {
  return DSV4_ISA_VARIANT(isa, attend_mla_bf16);
}

// With a single key, p = exp(0) = 1 and l = 1 exactly, so every variant must return the decoded
// record bit for bit: a direct check of each ISA's decoding, here with block scale codes from
// 1 (f32 subnormal products) to 200 (overwriting the encoder's scales), and the smallest e4m3
// code (0x01, 2^-9) in every block. The AVX-512 variant holds keys and values in bf16 (the upper
// half of each f32), exact while every decoded value is a normal f32: block scale codes >= 10
// (the encoder writes >= 105), so it gets the codes from 10 up; at code 1 the smallest code
// decodes to 2^-135, an f32 subnormal with bits in the lower half.
TEST(Attention, SingleKeyReturnsDecodedRecordExactly) {
  const std::vector<uint8_t> all_codes = {1, 10, 100, 127, 135, 200, 60};
  const std::vector<uint8_t> normal_codes = {10, 100, 127, 135, 200, 60};
  for (const V4RecordDims d : {V4RecordDims{512, 64}, V4RecordDims{128, 64}}) {
    const std::vector<float> q = random_floats(2 * d.head_dim, 72, -1e-3f, 1e-3f);
    for (Isa isa : supported_isas()) {
      const std::vector<uint8_t>& codes = isa == Isa::avx512 ? normal_codes : all_codes;
      V4Records r = make_records(17, d, 71);
      const size_t rb = d.record_bytes();
      for (size_t j = 0; j < 17; ++j)
        for (size_t b = 0; b < d.n_scales(); ++b) {
          r.bytes[j * rb + d.nope() + 2 * d.rope_dim + b] = codes[(j + b) % codes.size()];
          r.bytes[j * rb + b * 64 + (j % 64)] = 0x01;
        }
      for (size_t j = 0; j < 17; ++j) {
        const uint8_t* rec = &r.bytes[j * rb];
        std::vector<float> expect(d.head_dim);
        decode_v4_record_ref(rec, d, expect.data());
        AttnState st;
        st.reset(2, d.head_dim);
        v4_variant(isa)(q.data(), 2, d, &rec, 1, 0.01f, st, nullptr);
        const std::vector<float> out = finish(st, nullptr);
        for (size_t h = 0; h < 2; ++h)
          for (size_t i = 0; i < d.head_dim; ++i)
            ASSERT_EQ(out[h * d.head_dim + i], expect[i])
                << isa_label(isa) << " record " << j << " head " << h << " dim " << i;
      }
    }
  }
}

const std::vector<size_t> kKeyCounts = {1, 3, 7, 16, 17, 129, 640, 1000};
const std::vector<size_t> kHeadCounts = {1, 3, 16, 64};

// Compares the finished outputs (with a sink) and the running maxima of `got` and `ref`.
void expect_close(const AttnState& got, const AttnState& ref, const std::vector<float>& sink,
                  const std::string& what) {
  const std::vector<float> o = finish(got, sink.data()), e = finish(ref, sink.data());
  EXPECT_LE(max_rel_error(o.data(), e.data(), o.size()), kReassocTol) << what;
  for (size_t h = 0; h < ref.n_heads; ++h)
    EXPECT_NEAR(got.m[h], ref.m[h], kReassocTol * (1 + std::fabs(ref.m[h])))
        << what << " head " << h;
}

TEST(Attention, V4VariantsMatchRef) {
  for (const V4RecordDims d : {V4RecordDims{512, 64}, V4RecordDims{128, 64}}) {
    const size_t max_keys = kKeyCounts.back();
    const V4Records r = make_records(max_keys, d, 21);
    for (size_t H : kHeadCounts) {
      // Query magnitude chosen so the scores spread over several units (a peaked softmax).
      const std::vector<float> q = random_floats(H * d.head_dim, 100 + H, -4.f, 4.f);
      const std::vector<float> sink = random_floats(H, 200 + H, -2.f, 2.f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
      for (size_t n : kKeyCounts) {
        AttnState ref;
        ref.reset(H, d.head_dim);
        attend_v4_fp8_ref(q.data(), H, d, r.ptrs.data(), n, scale, ref);
        for (Isa isa : supported_isas()) {
          if (isa == Isa::ref) continue;
          const std::string what = isa_label(isa) + " head_dim " + std::to_string(d.head_dim) +
                                   " heads " + std::to_string(H) + " keys " + std::to_string(n);
          AttnScratch scratch;
          AttnState st;
          st.reset(H, d.head_dim);
          v4_variant(isa)(q.data(), H, d, r.ptrs.data(), n, scale, st, &scratch);
          expect_close(st, ref, sink, what);
          // The same keys added in two calls to one state (the second call rescales the
          // first's partial sums) and without a caller scratch.
          AttnState two;
          two.reset(H, d.head_dim);
          const size_t half = n / 2;
          v4_variant(isa)(q.data(), H, d, r.ptrs.data(), half, scale, two, nullptr);
          v4_variant(isa)(q.data(), H, d, r.ptrs.data() + half, n - half, scale, two, &scratch);
          expect_close(two, ref, sink, what + " (two calls)");
        }
      }
    }
  }
}

TEST(Attention, MlaVariantsMatchRef) {
  struct Cfg {
    size_t key_dim, value_dim;
  };
  for (const Cfg c : {Cfg{576, 512}, Cfg{96, 64}}) {
    const size_t max_keys = kKeyCounts.back();
    const std::vector<uint16_t> lat = make_latents(max_keys, c.key_dim, 31);
    for (size_t H : {size_t{1}, size_t{3}, size_t{16}, size_t{64}, size_t{128}}) {
      const std::vector<float> q = random_floats(H * c.key_dim, 300 + H, -2.f, 2.f);
      const std::vector<float> sink(H, kNegInf);  // MLA has no sink
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.key_dim));
      for (size_t n : kKeyCounts) {
        AttnState ref;
        ref.reset(H, c.value_dim);
        attend_mla_bf16_ref(q.data(), H, c.key_dim, c.value_dim, lat.data(), n, scale, ref);
        for (Isa isa : supported_isas()) {
          if (isa == Isa::ref) continue;
          const std::string what = isa_label(isa) + " key_dim " + std::to_string(c.key_dim) +
                                   " heads " + std::to_string(H) + " keys " + std::to_string(n);
          AttnScratch scratch;
          AttnState st;
          st.reset(H, c.value_dim);
          mla_variant(isa)(q.data(), H, c.key_dim, c.value_dim, lat.data(), n, scale, st, &scratch);
          expect_close(st, ref, sink, what);
        }
      }
    }
  }
}

// Both QK modes of the AVX-512 body, called directly (the public variant runs the one chosen for
// this CPU, detail::attn_qk_avx512()).
uint8_t* aligned64(std::vector<uint8_t>& buf, size_t bytes) {
  buf.resize(bytes + 64);
  const size_t mis = reinterpret_cast<uintptr_t>(buf.data()) % 64;
  return buf.data() + (mis ? 64 - mis : 0);
}

TEST(Attention, Avx512QkModesMatchRef) {
  const std::vector<Isa> isas = supported_isas();
  if (std::find(isas.begin(), isas.end(), Isa::avx512) == isas.end())
    GTEST_SKIP() << "no AVX-512 tier on this CPU";
  std::vector<uint8_t> buf;
  for (const V4RecordDims d : {V4RecordDims{512, 64}, V4RecordDims{128, 64}}) {
    const V4Records r = make_records(640, d, 61);
    for (size_t H : {size_t{3}, size_t{64}}) {
      const std::vector<float> q = random_floats(H * d.head_dim, 62 + H, -4.f, 4.f);
      const std::vector<float> sink = random_floats(H, 63 + H);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
      for (size_t n : {size_t{17}, size_t{129}, size_t{640}}) {
        AttnState ref;
        ref.reset(H, d.head_dim);
        attend_v4_fp8_ref(q.data(), H, d, r.ptrs.data(), n, scale, ref);
        for (detail::AttnQk mode : {detail::AttnQk::bf16_dot, detail::AttnQk::f32_fma}) {
          AttnState st;
          st.reset(H, d.head_dim);
          uint8_t* work = aligned64(buf, detail::attn_work_bytes_avx512(H, d.head_dim, d.head_dim));
          detail::attend_v4_fp8_raw_avx512(q.data(), H, d.head_dim, d.rope_dim, r.ptrs.data(), n,
                                           scale, st.m.data(), st.l.data(), st.acc.data(), work,
                                           mode);
          expect_close(st, ref, sink,
                       "v4 mode " + std::to_string(static_cast<int>(mode)) + " heads " +
                           std::to_string(H) + " keys " + std::to_string(n));
        }
      }
    }
  }
  struct Cfg {
    size_t key_dim, value_dim, heads, keys;
  };
  for (const Cfg c : {Cfg{576, 512, 128, 129}, Cfg{96, 64, 3, 17}}) {
    const std::vector<uint16_t> lat = make_latents(c.keys, c.key_dim, 64);
    const std::vector<float> q = random_floats(c.heads * c.key_dim, 65, -2.f, 2.f);
    const std::vector<float> sink(c.heads, kNegInf);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.key_dim));
    AttnState ref;
    ref.reset(c.heads, c.value_dim);
    attend_mla_bf16_ref(q.data(), c.heads, c.key_dim, c.value_dim, lat.data(), c.keys, scale, ref);
    for (detail::AttnQk mode : {detail::AttnQk::bf16_dot, detail::AttnQk::f32_fma}) {
      AttnState st;
      st.reset(c.heads, c.value_dim);
      uint8_t* work =
          aligned64(buf, detail::attn_work_bytes_avx512(c.heads, c.key_dim, c.value_dim));
      detail::attend_mla_bf16_raw_avx512(q.data(), c.heads, c.key_dim, c.value_dim, lat.data(),
                                         c.keys, scale, st.m.data(), st.l.data(), st.acc.data(),
                                         work, mode);
      expect_close(st, ref, sink,
                   "mla mode " + std::to_string(static_cast<int>(mode)) + " key_dim " +
                       std::to_string(c.key_dim));
    }
  }
}

// Splitting the keys into parts (one state each, as threads would) and merging equals one pass
// up to the rounding of the merge's rescaling (a few ulp of each partial sum).
TEST(Attention, SplitAndMergeEqualsOnePass) {
  const V4RecordDims d{512, 64};
  const size_t H = 16, n = 640;
  const V4Records r = make_records(n, d, 41);
  const std::vector<float> q = random_floats(H * d.head_dim, 42, -4.f, 4.f);
  const std::vector<float> sink = random_floats(H, 43);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  for (Isa isa : supported_isas()) {
    AttnState one;
    one.reset(H, d.head_dim);
    v4_variant(isa)(q.data(), H, d, r.ptrs.data(), n, scale, one, nullptr);
    for (size_t parts : {2, 3}) {
      AttnState merged;
      merged.reset(H, d.head_dim);
      AttnScratch scratch;
      for (size_t p = 0; p < parts; ++p) {
        const size_t b = n * p / parts, e = n * (p + 1) / parts;
        AttnState part;
        part.reset(H, d.head_dim);
        v4_variant(isa)(q.data(), H, d, r.ptrs.data() + b, e - b, scale, part, &scratch);
        attn_state_merge(merged, part);
      }
      // Tile boundaries move with the split, so the order of additions differs too: the same
      // reassociation tolerance as against _ref (the merge adds one rounding per part).
      const std::vector<float> o = finish(merged, sink.data()), e = finish(one, sink.data());
      EXPECT_LE(max_rel_error(o.data(), e.data(), o.size()), kReassocTol)
          << isa_label(isa) << " parts " << parts;
      for (size_t h = 0; h < H; ++h) EXPECT_EQ(merged.m[h], one.m[h]) << isa_label(isa);
    }
  }
}

// The dispatching entry point runs the active tier.
TEST(Attention, DispatchFollowsActiveIsa) {
  const V4RecordDims d{128, 64};
  const V4Records r = make_records(33, d, 51);
  const std::vector<float> q = random_floats(3 * d.head_dim, 52);
  const IsaGuard guard;
  for (Isa isa : supported_isas()) {
    set_active_isa_for_testing(isa);
    AttnState a, b;
    a.reset(3, d.head_dim);
    b.reset(3, d.head_dim);
    attend_v4_fp8(q.data(), 3, d, r.ptrs.data(), 33, 0.1f, a);
    v4_variant(isa)(q.data(), 3, d, r.ptrs.data(), 33, 0.1f, b, nullptr);
    EXPECT_EQ(a.acc, b.acc) << isa_label(isa);
    EXPECT_EQ(a.l, b.l) << isa_label(isa);
  }
}

}  // namespace
}  // namespace dsv4::kernels
