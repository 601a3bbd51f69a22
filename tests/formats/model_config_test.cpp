// Tests for formats/model_config: the published DeepSeek configs, transformers' spelling of
// the same config, family defaults, and every rejection path (each must name file and field).
#include "formats/model_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/mmap_file.h"

namespace dsv4::formats {
namespace {

const std::string kDir = std::string(DSV4_TEST_DATA_DIR) + "/configs/";

ModelConfig load_ok(const std::string& file) {
  auto c = load_model_config(kDir + file);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

ModelConfig parse_ok(const std::string& text) {
  auto c = parse_model_config(text, "test.json");
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

// Parses `text`, expects failure with `code`, and a message naming the file and `field`.
void expect_error(const std::string& text, ErrorCode code, const std::string& field) {
  auto c = parse_model_config(text, "test.json");
  ASSERT_FALSE(c.ok()) << "accepted: " << text;
  EXPECT_EQ(c.status().code(), code) << c.status().to_string();
  EXPECT_NE(c.status().message().find("test.json"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find(field), std::string::npos)
      << "message does not name '" << field << "': " << c.status().message();
}

// A minimal deepseek_v4 config with 4 layers, no MTP, plus `extra` fields.
std::string v4(const std::string& extra) {
  return R"({"model_type": "deepseek_v4", "num_hidden_layers": 4, "num_nextn_predict_layers": 0)" +
         (extra.empty() ? std::string() : ", " + extra) + "}";
}

using AT = AttentionType;

TEST(ModelConfig, PublishedV4Flash) {
  ModelConfig c = load_ok("deepseek_v4_flash.json");
  EXPECT_EQ(c.family, ModelFamily::deepseek_v4);
  EXPECT_EQ(c.model_type, "deepseek_v4");
  EXPECT_EQ(c.num_hidden_layers, 43);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.num_key_value_heads, 1);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_DOUBLE_EQ(c.partial_rotary_factor, 64.0 / 512.0);
  EXPECT_EQ(c.q_lora_rank, 1024);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_topk, 512);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.scoring_func, "sqrtsoftplus");
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.5);
  EXPECT_DOUBLE_EQ(c.swiglu_limit, 10.0);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_DOUBLE_EQ(c.hc_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.compress_rope_theta, 160000.0);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 16.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 65536);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_EQ(c.max_position_embeddings, 1048576);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_id, std::vector<int64_t>{1});
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.quantization_config.present);
  EXPECT_EQ(c.quantization_config.quant_method, "fp8");
  EXPECT_EQ(c.quantization_config.fmt, "e4m3");
  EXPECT_EQ(c.quantization_config.scale_fmt, "ue8m0");
  EXPECT_EQ(c.quantization_config.weight_block_size, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(c.quantization_config.expert_dtype, "fp4");
  EXPECT_EQ(c.num_nextn_predict_layers, 1);

  // compress_ratios has 43 + 1 entries: layers 0-1 sliding, then CSA on even and HCA on odd
  // layers up to 42 (CSA); the 44th entry (0) is the MTP layer.
  ASSERT_EQ(c.layer_types.size(), 43u);
  ASSERT_EQ(c.compress_ratios.size(), 43u);
  for (int i = 0; i < 43; ++i) {
    const AT want = i < 2        ? AT::sliding_attention
                    : i % 2 == 0 ? AT::compressed_sparse_attention
                                 : AT::heavily_compressed_attention;
    EXPECT_EQ(c.layer_types[i], want) << "layer " << i;
    EXPECT_EQ(c.compress_ratios[i], i < 2 ? 0 : i % 2 == 0 ? 4 : 128) << "layer " << i;
  }
  EXPECT_EQ(c.count_layers(AT::sliding_attention), 2);
  EXPECT_EQ(c.count_layers(AT::compressed_sparse_attention), 21);
  EXPECT_EQ(c.count_layers(AT::heavily_compressed_attention), 20);
  EXPECT_EQ(c.mtp_layer_types, std::vector<AT>{AT::sliding_attention});
  ASSERT_EQ(c.mlp_layer_types.size(), 43u);
  for (int i = 0; i < 43; ++i)
    EXPECT_EQ(c.mlp_layer_types[i], i < 3 ? MlpType::hash_moe : MlpType::moe) << i;
  EXPECT_EQ(c.num_hash_layers, 3);
}

TEST(ModelConfig, PublishedV4ProFromDirectory) {
  // A model directory is accepted: its config.json is read.
  ModelConfig c = load_ok("deepseek_v4_pro");
  EXPECT_NE(c.source.find("config.json"), std::string::npos);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.index_topk, 1024);
  EXPECT_EQ(c.o_groups, 16);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.n_routed_experts, 384);
  // [128, 128, 4, 128, ..., 4] + MTP 0: HCA at 0, 1 and odd layers; CSA at even layers >= 2.
  EXPECT_EQ(c.layer_types[0], AT::heavily_compressed_attention);
  EXPECT_EQ(c.layer_types[1], AT::heavily_compressed_attention);
  EXPECT_EQ(c.layer_types[2], AT::compressed_sparse_attention);
  EXPECT_EQ(c.layer_types[60], AT::compressed_sparse_attention);
  EXPECT_EQ(c.count_layers(AT::compressed_sparse_attention), 30);
  EXPECT_EQ(c.count_layers(AT::heavily_compressed_attention), 31);
  EXPECT_EQ(c.count_layers(AT::sliding_attention), 0);
  EXPECT_EQ(c.mtp_layer_types, std::vector<AT>{AT::sliding_attention});
}

TEST(ModelConfig, TransformersSpellingMatchesPublishedFile) {
  // The same model as written by transformers' DeepseekV4Config.to_dict(): layer_types,
  // compress_rates, mlp_layer_types, nested rope_parameters, partial_rotary_factor.
  ModelConfig a = load_ok("deepseek_v4_flash.json");
  ModelConfig b = load_ok("deepseek_v4_flash_transformers.json");
  EXPECT_EQ(b.layer_types, a.layer_types);
  EXPECT_EQ(b.compress_ratios, a.compress_ratios);
  EXPECT_EQ(b.mlp_layer_types, a.mlp_layer_types);
  EXPECT_EQ(b.qk_rope_head_dim, a.qk_rope_head_dim);
  EXPECT_DOUBLE_EQ(b.partial_rotary_factor, a.partial_rotary_factor);
  EXPECT_DOUBLE_EQ(b.rope_theta, a.rope_theta);
  EXPECT_DOUBLE_EQ(b.compress_rope_theta, a.compress_rope_theta);
  EXPECT_EQ(b.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(b.rope_scaling.factor, a.rope_scaling.factor);
  EXPECT_EQ(b.rope_scaling.original_max_position_embeddings,
            a.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(b.rope_scaling.attention_factor, std::optional<double>(1.0));
  EXPECT_EQ(b.quantization_config.expert_dtype, "fp4");
  EXPECT_EQ(b.sliding_window, a.sliding_window);
  EXPECT_EQ(b.index_topk, a.index_topk);
  // transformers truncates layer_types to num_hidden_layers; the MTP layer then defaults to
  // sliding_attention, which is what the published file says too.
  EXPECT_EQ(b.mtp_layer_types, a.mtp_layer_types);
}

TEST(ModelConfig, V4DefaultsAreTransformersDefaults) {
  // Nothing but the model_type: DeepseekV4Config's defaults. Its default schedule is 2 HCA
  // layers, then HCA/CSA alternating starting with HCA at layer 2 (unlike the published Pro
  // file, which has CSA at layer 2).
  ModelConfig c = parse_ok(R"({"model_type": "deepseek_v4"})");
  EXPECT_EQ(c.num_hidden_layers, 43);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);  // head_dim * 64 / 512
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.index_topk, 512);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.compress_rate_csa, 4);
  EXPECT_EQ(c.compress_rate_hca, 128);
  EXPECT_EQ(c.layer_types[0], AT::heavily_compressed_attention);
  EXPECT_EQ(c.layer_types[1], AT::heavily_compressed_attention);
  EXPECT_EQ(c.layer_types[2], AT::heavily_compressed_attention);
  EXPECT_EQ(c.layer_types[3], AT::compressed_sparse_attention);
  EXPECT_EQ(c.count_layers(AT::compressed_sparse_attention), 20);  // odd i in [0, 41)
  EXPECT_EQ(c.count_layers(AT::heavily_compressed_attention), 23);
  EXPECT_EQ(c.num_hash_layers, 3);
  EXPECT_EQ(c.scoring_func, "sqrtsoftplus");
  EXPECT_EQ(c.eos_token_id, std::vector<int64_t>{1});
}

TEST(ModelConfig, V4LegacyAndTransformersKnobs) {
  // compress_rates override the rate of each attention type; compress_ratios still decide
  // which type a layer has (4 -> CSA, 128 -> HCA), as in transformers.
  ModelConfig c = parse_ok(v4(R"("compress_ratios": [0, 4, 128, 4],
      "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 8})"));
  EXPECT_EQ(c.compress_ratios, (std::vector<int64_t>{0, 4, 8, 4}));
  // Legacy scalar overrides the dict.
  c = parse_ok(v4(R"("compress_ratios": [0, 4, 128, 4], "compress_rate_hca": 16)"));
  EXPECT_EQ(c.compress_ratios, (std::vector<int64_t>{0, 4, 16, 4}));
  // partial_rotary_factor sets qk_rope_head_dim = int(head_dim * factor).
  c = parse_ok(v4(R"("head_dim": 256, "partial_rotary_factor": 0.25)"));
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  // qk_rope_head_dim alone sets the factor.
  c = parse_ok(v4(R"("head_dim": 256, "qk_rope_head_dim": 32)"));
  EXPECT_DOUBLE_EQ(c.partial_rotary_factor, 0.125);
  // num_hash_layers builds the MoE schedule; explicit mlp_layer_types are taken as given.
  c = parse_ok(v4(R"("num_hash_layers": 1)"));
  EXPECT_EQ(c.mlp_layer_types,
            (std::vector<MlpType>{MlpType::hash_moe, MlpType::moe, MlpType::moe, MlpType::moe}));
  c = parse_ok(v4(R"("mlp_layer_types": ["hash_moe", "hash_moe", "moe", "moe"])"));
  EXPECT_EQ(c.num_hash_layers, 2);
  // The file's MTP entries give the MTP layers' types.
  c = parse_ok(R"({"model_type": "deepseek_v4", "num_hidden_layers": 2,
      "num_nextn_predict_layers": 2, "compress_ratios": [4, 128, 128, 0]})");
  EXPECT_EQ(c.mtp_layer_types,
            (std::vector<AT>{AT::heavily_compressed_attention, AT::sliding_attention}));
  // Flat rope_parameters carry the YaRN parameters too.
  c = parse_ok(v4(
      R"("rope_parameters": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 4096})"));
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  // null where the reference allows None.
  c = parse_ok(v4(R"("rope_scaling": null, "bos_token_id": null, "eos_token_id": [1, 7])"));
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{1, 7}));
}

TEST(ModelConfig, V4Rejections) {
  const auto inv = ErrorCode::invalid_argument;
  // compress_ratios: values and length (43 main layers + up to num_nextn_predict_layers).
  expect_error(v4(R"("compress_ratios": [0, 4, 8, 128])"), inv, "compress_ratios[2]");
  expect_error(v4(R"("compress_ratios": [0, 4, -4, 128])"), inv, "compress_ratios[2]");
  expect_error(v4(R"("compress_ratios": [0, 4, "128", 128])"), inv, "compress_ratios[2]");
  expect_error(v4(R"("compress_ratios": [0, 4, 128])"), inv, "compress_ratios");
  expect_error(v4(R"("compress_ratios": [0, 4, 128, 4, 0])"), inv, "compress_ratios");
  expect_error(v4(R"("compress_ratios": {"0": 4})"), inv, "compress_ratios");
  expect_error(
      R"({"model_type": "deepseek_v4", "num_hidden_layers": 43, "num_nextn_predict_layers": 1,
      "compress_ratios": [0, 0, 0]})",
      inv, "num_hidden_layers + num_nextn_predict_layers");
  // layer_types / mlp_layer_types.
  expect_error(
      v4(R"("layer_types": ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"])"),
      inv, "layer_types[1]");
  expect_error(v4(R"("layer_types": ["sliding_attention"])"), inv, "layer_types");
  expect_error(v4(R"("compress_ratios": [0, 4, 128, 4], "layer_types": ["sliding_attention",
      "compressed_sparse_attention", "compressed_sparse_attention", "compressed_sparse_attention"])"),
               inv, "layer_types[2]");
  expect_error(v4(R"("mlp_layer_types": ["moe", "dense", "moe", "moe"])"), inv,
               "mlp_layer_types[1]");
  expect_error(v4(R"("num_hash_layers": 2, "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"])"),
               inv, "mlp_layer_types[1]");
  // Dimensions.
  expect_error(v4(R"("head_dim": 32, "qk_rope_head_dim": 64)"), inv, "qk_rope_head_dim");
  expect_error(v4(R"("qk_rope_head_dim": 63)"), inv, "qk_rope_head_dim");
  expect_error(v4(R"("head_dim": 256, "qk_rope_head_dim": 64, "partial_rotary_factor": 0.5)"), inv,
               "qk_rope_head_dim");
  expect_error(v4(R"("partial_rotary_factor": 1.5)"), inv, "partial_rotary_factor");
  expect_error(v4(R"("hidden_size": 0)"), inv, "hidden_size");
  expect_error(v4(R"("hidden_size": -4096)"), inv, "hidden_size");
  expect_error(v4(R"("head_dim": "512")"), inv, "head_dim");
  expect_error(v4(R"("head_dim": 512.5)"), inv, "head_dim");
  expect_error(v4(R"("head_dim": null)"), inv, "head_dim");
  expect_error(v4(R"("sliding_window": 0)"), inv, "sliding_window");
  expect_error(R"({"model_type": "deepseek_v4", "num_hidden_layers": 0})", inv,
               "num_hidden_layers");
  expect_error(R"({"model_type": "deepseek_v4", "num_hidden_layers": 100000000000})", inv,
               "num_hidden_layers");
  expect_error(R"({"model_type": "deepseek_v4", "num_hidden_layers": 1e30})", inv,
               "num_hidden_layers");
  expect_error(v4(R"("vocab_size": 99999999999999999999999)"), inv, "vocab_size");
  // The lightning indexer needs sizes whenever a layer is CSA.
  expect_error(v4(R"("compress_ratios": [0, 4, 128, 0], "index_topk": 0)"), inv, "index_topk");
  expect_error(v4(R"("compress_ratios": [0, 4, 128, 0], "index_n_heads": 0)"), inv,
               "index_n_heads");
  expect_error(v4(R"("compress_ratios": [0, 4, 128, 0], "index_head_dim": 0)"), inv,
               "index_head_dim");
  EXPECT_TRUE(
      parse_model_config(v4(R"("compress_ratios": [0, 128, 128, 0], "index_topk": 0)"), "t").ok())
      << "index_topk 0 is fine without CSA layers";
  // Other invariants and types.
  expect_error(v4(R"("num_key_value_heads": 2)"), ErrorCode::unsupported, "num_key_value_heads");
  expect_error(v4(R"("o_groups": 3)"), inv, "o_groups");
  expect_error(v4(R"("num_experts_per_tok": 300)"), inv, "num_experts_per_tok");
  expect_error(v4(R"("scoring_func": "tanh")"), inv, "scoring_func");
  expect_error(v4(R"("norm_topk_prob": "yes")"), inv, "norm_topk_prob");
  expect_error(v4(R"("rms_norm_eps": 0)"), inv, "rms_norm_eps");
  expect_error(v4(R"("rope_scaling": [16])"), inv, "rope_scaling");
  expect_error(v4(R"("rope_scaling": {"type": "yarn", "factor": "16"})"), inv,
               "rope_scaling.factor");
  expect_error(v4(R"("rope_scaling": {"type": "yarn", "factor": 0})"), inv, "rope_scaling.factor");
  expect_error(v4(R"("compress_rates": {"compressed_sparse_attention": 0})"), inv,
               "compress_rates.compressed_sparse_attention");
  expect_error(v4(R"("eos_token_id": [1, "2"])"), inv, "eos_token_id[1]");
  expect_error(v4(R"("quantization_config": {"weight_block_size": [128, 0]})"), inv,
               "quantization_config.weight_block_size[1]");
}

TEST(ModelConfig, MalformedAndUnknown) {
  auto c =
      parse_model_config("{\n  \"model_type\": \"deepseek_v4\",\n  \"x\": [1, 2\n", "bad.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), ErrorCode::parse_error);
  EXPECT_NE(c.status().message().find("bad.json: malformed JSON at line"), std::string::npos)
      << c.status().message();
  for (const char* text : {"", "   ", "{", "{\"a\": }", "nul", "{\"a\": 1,}", "\xff\xfe{}"}) {
    auto r = parse_model_config(text, "bad.json");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), ErrorCode::parse_error) << text;
  }
  // A deeply nested document is a parse result, not a crash.
  auto deep = parse_model_config(std::string(100000, '[') + std::string(100000, ']'), "deep.json");
  EXPECT_FALSE(deep.ok());

  expect_error("[1, 2, 3]", ErrorCode::parse_error, "top level");
  expect_error("{}", ErrorCode::invalid_argument, "model_type");
  expect_error(R"({"model_type": 4})", ErrorCode::invalid_argument, "model_type");
  expect_error(R"({"model_type": "gpt_neox"})", ErrorCode::unsupported, "gpt_neox");
  // Control bytes of an unknown name are escaped in the message.
  auto r = parse_model_config("{\"model_type\": \"a\\u0007b\"}", "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find('\a'), std::string::npos);
}

TEST(ModelConfig, LoadErrors) {
  auto missing = load_model_config(kDir + "no_such_config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::not_found);
  EXPECT_NE(missing.status().message().find("no_such_config.json"), std::string::npos);

  // A directory without config.json.
  std::string tmpl = (std::filesystem::temp_directory_path() / "dsv4_cfg_XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  auto empty_dir = load_model_config(tmpl);
  ASSERT_FALSE(empty_dir.ok());
  EXPECT_EQ(empty_dir.status().code(), ErrorCode::not_found);
  EXPECT_NE(empty_dir.status().message().find("config.json"), std::string::npos);
  std::filesystem::remove_all(tmpl);

  for (const char* f : {"bad_malformed.json", "bad_not_object.json"}) {
    auto b = load_model_config(kDir + f);
    ASSERT_FALSE(b.ok()) << f;
    EXPECT_EQ(b.status().code(), ErrorCode::parse_error) << f;
    EXPECT_NE(b.status().message().find(f), std::string::npos) << b.status().message();
  }
  auto unk = load_model_config(kDir + "bad_unknown_arch.json");
  ASSERT_FALSE(unk.ok());
  EXPECT_EQ(unk.status().code(), ErrorCode::unsupported);
  EXPECT_NE(unk.status().message().find("gpt_neox"), std::string::npos);
  auto ratio = load_model_config(kDir + "bad_compress_ratio.json");
  ASSERT_FALSE(ratio.ok());
  EXPECT_NE(ratio.status().message().find("compress_ratios[2]"), std::string::npos);
}

TEST(ModelConfig, Mla) {
  ModelConfig c = load_ok("deepseek_v32.json");
  EXPECT_EQ(c.family, ModelFamily::deepseek_v32);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.qk_nope_head_dim, 128);
  EXPECT_EQ(c.v_head_dim, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_topk, 2048);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 40.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 1.0);

  ModelConfig v3 = load_ok("deepseek_v3.json");
  EXPECT_EQ(v3.family, ModelFamily::deepseek_v3);
  EXPECT_EQ(v3.kv_lora_rank, 512);
  EXPECT_EQ(v3.index_topk, 0);
  // q_lora_rank null (V2-Lite style) means no query compression.
  ModelConfig lite = parse_ok(R"({"model_type": "deepseek_v3", "q_lora_rank": null})");
  EXPECT_EQ(lite.q_lora_rank, 0);
  EXPECT_EQ(lite.num_key_value_heads, 128);
  expect_error(R"({"model_type": "deepseek_v32", "kv_lora_rank": 0})", ErrorCode::invalid_argument,
               "kv_lora_rank");
  expect_error(R"({"model_type": "deepseek_v32", "index_topk": 0})", ErrorCode::invalid_argument,
               "index_topk");
  expect_error(R"({"model_type": "deepseek_v3", "qk_rope_head_dim": 7})",
               ErrorCode::invalid_argument, "qk_rope_head_dim");
}

TEST(ModelConfig, Gqa) {
  ModelConfig l = load_ok("llama3_8b.json");
  EXPECT_EQ(l.family, ModelFamily::gqa);
  EXPECT_EQ(l.num_key_value_heads, 8);
  EXPECT_EQ(l.head_dim, 4096 / 32);
  EXPECT_EQ(l.layer_sliding_window, std::vector<int64_t>(32, 0));
  EXPECT_EQ(l.eos_token_id, std::vector<int64_t>{128001});

  // Mistral v0.1: sliding_window 4096 on every layer.
  ModelConfig m = load_ok("mistral_7b_v01.json");
  EXPECT_EQ(m.layer_sliding_window, std::vector<int64_t>(32, 4096));
  // null sliding_window: full attention; absent: MistralConfig's default 4096.
  EXPECT_EQ(parse_ok(R"({"model_type": "mistral", "sliding_window": null})").layer_sliding_window,
            std::vector<int64_t>(32, 0));
  EXPECT_EQ(parse_ok(R"({"model_type": "mistral"})").layer_sliding_window,
            std::vector<int64_t>(32, 4096));
  EXPECT_EQ(parse_ok(R"({"model_type": "mistral"})").num_key_value_heads, 8);

  // Qwen2.5: sliding_window in the file but use_sliding_window false -> full attention.
  ModelConfig q = load_ok("qwen2_5_7b.json");
  EXPECT_EQ(q.num_key_value_heads, 4);
  EXPECT_EQ(q.head_dim, 3584 / 28);
  EXPECT_EQ(q.layer_sliding_window, std::vector<int64_t>(28, 0));
  ModelConfig qs = load_ok("qwen2_sliding_tiny.json");
  EXPECT_EQ(qs.layer_sliding_window, (std::vector<int64_t>{0, 0, 64, 64}));
  ModelConfig qt =
      parse_ok(R"({"model_type": "qwen2", "num_hidden_layers": 2, "use_sliding_window": true,
      "sliding_window": 32, "layer_types": ["sliding_attention", "full_attention"]})");
  EXPECT_EQ(qt.layer_sliding_window, (std::vector<int64_t>{32, 0}));
  // Qwen3 defaults: head_dim 128, 32 KV heads.
  ModelConfig q3 = parse_ok(R"({"model_type": "qwen3"})");
  EXPECT_EQ(q3.head_dim, 128);
  EXPECT_EQ(q3.num_key_value_heads, 32);
  // llama: num_key_value_heads absent -> MHA.
  EXPECT_EQ(parse_ok(R"({"model_type": "llama", "num_attention_heads": 16})").num_key_value_heads,
            16);

  expect_error(R"({"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 5})",
               ErrorCode::invalid_argument, "num_key_value_heads");
  expect_error(R"({"model_type": "llama", "hidden_size": 16, "num_attention_heads": 32})",
               ErrorCode::invalid_argument, "head_dim");
  expect_error(R"({"model_type": "qwen3", "head_dim": null})", ErrorCode::invalid_argument,
               "head_dim");
  expect_error(
      R"({"model_type": "qwen2", "num_hidden_layers": 2, "layer_types": ["sliding_attention"]})",
      ErrorCode::invalid_argument, "layer_types");
  expect_error(
      R"({"model_type": "qwen2", "num_hidden_layers": 2, "layer_types": ["x", "full_attention"]})",
      ErrorCode::invalid_argument, "layer_types[0]");
  expect_error(R"({"model_type": "mistral", "sliding_window": 0})", ErrorCode::invalid_argument,
               "sliding_window");
}

}  // namespace
}  // namespace dsv4::formats
