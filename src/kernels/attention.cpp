// kernels/attention.cpp — AttnState bookkeeping (reset, merge, finish), the dispatching entry
// points of kernels/attention.h, and the public _avx2/_avx512 variants: they check shapes, size
// the scratch and call the raw-pointer bodies in x86/attention_avx*.cpp. Built for the base ISA.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/cpu_features.h"
#include "kernels/dispatch.h"

namespace dsv4::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

void AttnState::reset(size_t heads, size_t width) {
  n_heads = heads;
  dim = width;
  m.assign(heads, kNegInf);
  l.assign(heads, 0.0f);
  acc.assign(heads * width, 0.0f);
}

void attn_state_merge(AttnState& a, const AttnState& b) {
  DSV4_CHECK(a.n_heads == b.n_heads && a.dim == b.dim);
  const size_t dim = a.dim;
  for (size_t h = 0; h < a.n_heads; ++h) {
    const float mb = b.m[h];
    if (mb == kNegInf) continue;  // b holds no key of this head
    const float ma = a.m[h];
    float* acc = &a.acc[h * dim];
    const float* bacc = &b.acc[h * dim];
    if (ma == kNegInf) {  // a is empty: copy b
      a.m[h] = mb;
      a.l[h] = b.l[h];
      std::copy(bacc, bacc + dim, acc);
      continue;
    }
    const float m = std::max(ma, mb);
    const float ca = std::exp(ma - m), cb = std::exp(mb - m);  // one of them is exactly 1
    a.m[h] = m;
    a.l[h] = a.l[h] * ca + b.l[h] * cb;
    for (size_t d = 0; d < dim; ++d) acc[d] = acc[d] * ca + bacc[d] * cb;
  }
}

void attn_state_finish(const AttnState& st, const float* sink, float* out) {
  const size_t dim = st.dim;
  for (size_t h = 0; h < st.n_heads; ++h) {
    float* o = out + h * dim;
    const float s = sink ? sink[h] : kNegInf;
    // Rescale to M = max(m, sink) so that neither exponential overflows.
    const float mx = std::max(st.m[h], s);
    if (mx == kNegInf || st.m[h] == kNegInf) {  // no key: the output is 0 with or without sink
      std::fill(o, o + dim, 0.0f);
      continue;
    }
    const float c = std::exp(st.m[h] - mx);
    const float denom = st.l[h] * c + (s == kNegInf ? 0.0f : std::exp(s - mx));
    const float f = c / denom;
    const float* a = &st.acc[h * dim];
    for (size_t d = 0; d < dim; ++d) o[d] = a[d] * f;
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

void attend_v4_fp8(const float* q, size_t n_heads, V4RecordDims dims, const uint8_t* const* recs,
                   size_t n_keys, float scale, AttnState& st, AttnScratch* scratch) {
  DSV4_DISPATCH_ISA(attend_v4_fp8, q, n_heads, dims, recs, n_keys, scale, st, scratch);
}
void attend_mla_bf16(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                     const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                     AttnScratch* scratch) {
  DSV4_DISPATCH_ISA(attend_mla_bf16, q, n_heads, key_dim, value_dim, latents, n_keys, scale, st,
                    scratch);
}

// ---------------------------------------------------------------------------------------------
// Public ISA variants: shape checks, scratch, then the raw bodies (x86/attention_avx*.cpp).
// ---------------------------------------------------------------------------------------------
namespace {

// A 64-byte aligned block of `bytes` in the caller's scratch (grown once), or in `local`.
uint8_t* work_buffer(AttnScratch* scratch, std::vector<uint8_t>& local, size_t bytes) {
  std::vector<uint8_t>& buf = scratch ? scratch->bytes : local;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  const size_t mis = reinterpret_cast<uintptr_t>(buf.data()) % 64;
  return buf.data() + (mis ? 64 - mis : 0);
}

// Shapes the vector bodies handle: whole 32-dim key and value blocks (16 bf16 pairs).
bool v4_vector_shape(V4RecordDims d) {
  return d.rope_dim <= d.head_dim && d.head_dim % 32 == 0 && d.nope() % 64 == 0;
}
bool mla_vector_shape(size_t key_dim, size_t value_dim) {
  return key_dim % 32 == 0 && value_dim % 32 == 0 && value_dim <= key_dim;
}

// raw(work) runs the ISA body on the state's arrays.
template <typename Raw>
void run_v4(Raw raw, size_t (*work_bytes)(size_t, size_t, size_t), const float* q, size_t n_heads,
            V4RecordDims dims, const uint8_t* const* recs, size_t n_keys, float scale,
            AttnState& st, AttnScratch* scratch) {
  DSV4_CHECK(st.n_heads == n_heads && st.dim == dims.head_dim);
  if (!v4_vector_shape(dims)) {
    attend_v4_fp8_ref(q, n_heads, dims, recs, n_keys, scale, st, scratch);
    return;
  }
  if (n_keys == 0) return;
  std::vector<uint8_t> local;
  uint8_t* work = work_buffer(scratch, local, work_bytes(n_heads, dims.head_dim, dims.head_dim));
  raw(q, n_heads, dims.head_dim, dims.rope_dim, recs, n_keys, scale, st.m.data(), st.l.data(),
      st.acc.data(), work);
}

template <typename Raw>
void run_mla(Raw raw, size_t (*work_bytes)(size_t, size_t, size_t), const float* q, size_t n_heads,
             size_t key_dim, size_t value_dim, const uint16_t* latents, size_t n_keys, float scale,
             AttnState& st, AttnScratch* scratch) {
  DSV4_CHECK(st.n_heads == n_heads && st.dim == value_dim && value_dim <= key_dim);
  if (!mla_vector_shape(key_dim, value_dim)) {
    attend_mla_bf16_ref(q, n_heads, key_dim, value_dim, latents, n_keys, scale, st, scratch);
    return;
  }
  if (n_keys == 0) return;
  std::vector<uint8_t> local;
  uint8_t* work = work_buffer(scratch, local, work_bytes(n_heads, key_dim, value_dim));
  raw(q, n_heads, key_dim, value_dim, latents, n_keys, scale, st.m.data(), st.l.data(),
      st.acc.data(), work);
}

}  // namespace

detail::AttnQk detail::attn_qk_avx512() {
  static const AttnQk mode =
      cpu_features().brand.find("Intel") != std::string::npos ? AttnQk::f32_fma : AttnQk::bf16_dot;
  return mode;
}

void attend_v4_fp8_avx2(const float* q, size_t n_heads, V4RecordDims dims,
                        const uint8_t* const* recs, size_t n_keys, float scale, AttnState& st,
                        AttnScratch* scratch) {
  run_v4(detail::attend_v4_fp8_raw_avx2, detail::attn_work_bytes_avx2, q, n_heads, dims, recs,
         n_keys, scale, st, scratch);
}
void attend_v4_fp8_avx512(const float* q, size_t n_heads, V4RecordDims dims,
                          const uint8_t* const* recs, size_t n_keys, float scale, AttnState& st,
                          AttnScratch* scratch) {
  run_v4(
      [](const float* q_, size_t h_, size_t hd_, size_t rd_, const uint8_t* const* r_, size_t n_,
         float s_, float* m_, float* l_, float* a_, uint8_t* w_) {
        detail::attend_v4_fp8_raw_avx512(q_, h_, hd_, rd_, r_, n_, s_, m_, l_, a_, w_,
                                         detail::attn_qk_avx512());
      },
      detail::attn_work_bytes_avx512, q, n_heads, dims, recs, n_keys, scale, st, scratch);
}
void attend_mla_bf16_avx2(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                          const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                          AttnScratch* scratch) {
  run_mla(detail::attend_mla_bf16_raw_avx2, detail::attn_work_bytes_avx2, q, n_heads, key_dim,
          value_dim, latents, n_keys, scale, st, scratch);
}
void attend_mla_bf16_avx512(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                            const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                            AttnScratch* scratch) {
  run_mla(
      [](const float* q_, size_t h_, size_t kd_, size_t vd_, const uint16_t* x_, size_t n_,
         float s_, float* m_, float* l_, float* a_, uint8_t* w_) {
        detail::attend_mla_bf16_raw_avx512(q_, h_, kd_, vd_, x_, n_, s_, m_, l_, a_, w_,
                                           detail::attn_qk_avx512());
      },
      detail::attn_work_bytes_avx512, q, n_heads, key_dim, value_dim, latents, n_keys, scale, st,
      scratch);
}

}  // namespace dsv4::kernels
