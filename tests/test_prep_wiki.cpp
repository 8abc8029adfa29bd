// The Wikipedia validation text (../shared/data, skipped when absent): prep it
// into gpt2 shards, check the document and token counts with verify, and train
// a few steps of a small model on the shards.
#include <gtest/gtest.h>

#include <filesystem>

#include "backend/cpu/cpu_backend.h"
#include "core/fs.h"
#include "data/manifest.h"
#include "data/prep.h"
#include "test_util.h"
#include "train/trainer.h"

namespace nmoe {
namespace {

TEST(PrepWiki, GptShardsVerifyAndTrain) {
  const std::string val = test::shared_dir() + "/data/corpus/enwiki_2015/enwiki_2015_wikiextractor.val.txt.zst";
  if (!std::filesystem::exists(val)) GTEST_SKIP() << "no " << val;
  test::TempDir d;
  PrepOptions o;
  o.source.source = "text";
  o.source.text_format = "wikiextractor";
  o.source.files = {val};
  o.tokenizer = "gpt2";
  o.name = "enwiki";
  o.output = d / "val";
  o.fsync = false;
  Manifest m = prep_dataset(o).manifest;
  EXPECT_EQ(m.stats["documents_read"], 58);  // the corpus README: 58 articles
  EXPECT_EQ(m.total_documents, 58);
  EXPECT_EQ(m.total_tokens, 222109);
  EXPECT_EQ(m.dtype, "uint16");
  VerifyReport r = verify_dataset(d / "val");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.documents, 58);
  EXPECT_EQ(r.tokens, 222109);

  Config cfg = load_config_string(R"(tokenizer = "gpt2"
vocab_size = 50304
eos_token_id = 50256
loss_mask_eos = false
dim = 32
n_layers = 2
n_heads = 2
inter_dim = 64
moe_inter_dim = 16
n_dense_layers = 1
n_routed_experts = 4
n_activated_experts = 2
attn = "sdpa"
seq_len = 64
batch_size = 4
steps = 12
lr_dense = 1e-2
lr_expert = 1e-2
lr_router = 1e-2
warmup_steps = 2
log_every = 4
resume = false
fsync = false
)",
                                  "wiki", {{"data_path", "\"" + d / "val" + "\""},
                                           {"checkpoint_dir", "\"" + d / "ckpt" + "\""},
                                           {"experiments_db", "\"" + d / "exp.db" + "\""}});
  auto backend = make_cpu_backend(2);
  TrainResult t = train(cfg, *backend);
  ASSERT_EQ(t.losses.size(), 12u);
  // At init the logits have unit variance (lm_head std dim^-1/2 on unit-RMS
  // inputs), so the expected cross-entropy is ln(V) + 1/2.
  EXPECT_NEAR(t.losses.front(), std::log(50304.0) + 0.5, 0.2);
  EXPECT_LT(t.losses.back(), t.losses.front() - 1.0);
}

}  // namespace
}  // namespace nmoe
