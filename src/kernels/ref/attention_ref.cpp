// Scalar twins of kernels/attention.h: the header's math evaluated literally, two passes over the
// new keys (scores, then exp-weighted sums), the result merged into the caller's state.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "base/check.h"
#include "kernels/attention.h"
#include "kernels/codecs.h"

namespace dsv4::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// State of n_heads heads over the n_keys rows of k ([n_keys, key_dim] f32); the value of row j is
// its first value_dim entries. q: [n_heads, key_dim] f32, rounded to bf16 here.
AttnState rows_state(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                     const float* k, size_t n_keys, float scale) {
  AttnState b;
  b.reset(n_heads, value_dim);
  std::vector<float> qb(key_dim), s(n_keys);
  for (size_t h = 0; h < n_heads; ++h) {
    for (size_t d = 0; d < key_dim; ++d) qb[d] = decode_bf16(encode_bf16(q[h * key_dim + d]));
    float m = kNegInf;
    for (size_t j = 0; j < n_keys; ++j) {
      float dot = 0;
      for (size_t d = 0; d < key_dim; ++d) dot += qb[d] * k[j * key_dim + d];
      s[j] = scale * dot;
      m = std::max(m, s[j]);
    }
    if (m == kNegInf) continue;  // no key with a finite score: the empty state
    float l = 0;
    float* acc = &b.acc[h * value_dim];
    for (size_t j = 0; j < n_keys; ++j) {
      const float p = std::exp(s[j] - m);
      l += p;
      for (size_t d = 0; d < value_dim; ++d) acc[d] += p * k[j * key_dim + d];
    }
    b.m[h] = m;
    b.l[h] = l;
  }
  return b;
}

}  // namespace

void decode_v4_record_ref(const uint8_t* rec, V4RecordDims dims, float* out) {
  const size_t nope = dims.nope();
  const uint8_t* scales = rec + nope + 2 * dims.rope_dim;
  for (size_t i = 0; i < nope; ++i) out[i] = decode_f8e4m3(rec[i]) * decode_ue8m0(scales[i / 64]);
  for (size_t i = 0; i < dims.rope_dim; ++i) {
    uint16_t h;
    std::memcpy(&h, rec + nope + 2 * i, 2);  // little endian, as x86 stores it
    out[nope + i] = decode_bf16(h);
  }
}

void attend_v4_fp8_ref(const float* q, size_t n_heads, V4RecordDims dims,
                       const uint8_t* const* recs, size_t n_keys, float scale, AttnState& st,
                       AttnScratch* /*scratch*/) {
  DSV4_CHECK(st.n_heads == n_heads && st.dim == dims.head_dim);
  DSV4_CHECK(dims.rope_dim <= dims.head_dim && dims.nope() % 64 == 0);
  if (n_keys == 0) return;
  std::vector<float> k(n_keys * dims.head_dim);
  for (size_t j = 0; j < n_keys; ++j) decode_v4_record_ref(recs[j], dims, &k[j * dims.head_dim]);
  attn_state_merge(st,
                   rows_state(q, n_heads, dims.head_dim, dims.head_dim, k.data(), n_keys, scale));
}

void attend_mla_bf16_ref(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                         const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                         AttnScratch* /*scratch*/) {
  DSV4_CHECK(st.n_heads == n_heads && st.dim == value_dim && value_dim <= key_dim);
  if (n_keys == 0) return;
  std::vector<float> k(n_keys * key_dim);
  for (size_t i = 0; i < k.size(); ++i) k[i] = decode_bf16(latents[i]);
  attn_state_merge(st, rows_state(q, n_heads, key_dim, value_dim, k.data(), n_keys, scale));
}

}  // namespace dsv4::kernels
