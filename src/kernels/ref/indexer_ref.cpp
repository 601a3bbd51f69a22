// kernels/ref/indexer_ref.cpp — the scalar twin of kernels/indexer.h: the score definition
// evaluated literally (decode every code with codecs.h, exact block sums, scaling, blocks in
// increasing b, fma over heads in increasing h). Every vector variant is tested against it.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "base/check.h"
#include "kernels/codecs.h"
#include "kernels/indexer.h"

namespace dsv4::kernels {

void indexer_scores_fp4_ref(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys,
                            float* out, IndexerScratch*) {
  DSV4_CHECK(q.dim % kF4Block == 0 && q.dim > 0 && q.dim <= 512);
  DSV4_CHECK(q.n_heads >= 1 && q.n_heads <= 128);
  const size_t dim = q.dim, n_blocks = dim / kF4Block, rb = indexer_fp4_record_bytes(dim);
  for (size_t j = 0; j < n_keys; ++j) {
    const uint8_t* k_codes = keys + j * rb;
    const uint8_t* k_scales = k_codes + dim / 2;
    float acc = 0.0f;
    for (size_t h = 0; h < q.n_heads; ++h) {
      const uint8_t* q_codes = q.codes + h * (dim / 2);
      const uint8_t* q_scales = q.scales + h * n_blocks;
      float d = 0.0f;
      for (size_t b = 0; b < n_blocks; ++b) {
        float c = 0.0f;  // exact: a multiple of 1/4 with |c| <= 32 * 36
        for (size_t i = b * kF4Block; i < (b + 1) * kF4Block; ++i) {
          const uint8_t qc = static_cast<uint8_t>(q_codes[i / 2] >> (4 * (i % 2)));
          const uint8_t kc = static_cast<uint8_t>(k_codes[i / 2] >> (4 * (i % 2)));
          c += decode_f4e2m1(qc) * decode_f4e2m1(kc);
        }
        d += (c * decode_ue8m0(q_scales[b])) * decode_ue8m0(k_scales[b]);
      }
      const float r = d > 0.0f ? d : 0.0f;
      acc = std::fma(q.weights[h], r, acc);
    }
    out[j] = acc;
  }
}

void indexer_scores_fp4_multi_ref(const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                                  size_t n_keys, float* out, size_t out_stride,
                                  IndexerScratch* scratch) {
  for (size_t t = 0; t < n_queries; ++t)
    indexer_scores_fp4_ref(qs[t], keys, n_keys, out + t * out_stride, scratch);
}

}  // namespace dsv4::kernels
