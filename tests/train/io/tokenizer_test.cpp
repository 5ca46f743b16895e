// Tokenizers: the byte tokenizer, GPT-2's pre-tokenizer, and byte-level BPE on a tiny
// hand-made vocabulary (round trips of random bytes, merges applied by rank, bad files).
#include "examples/zoro_train/io/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "tests/support/random.h"
#include "tests/train/io/test_util.h"

namespace zoro::train {
namespace {

using testing::TempDir;

TEST(ByteTokenizer, RoundTripsRandomBytes) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(1);
  const auto bytes = zoro::testing::random_bytes(rng, 1000);
  const std::string text(bytes.begin(), bytes.end());
  ByteTokenizer t;
  const auto ids = t.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], bytes[i]);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.vocab_size(), 257);
  EXPECT_EQ(t.eot_id(), 256);
  const std::vector<std::int32_t> eot = {'a', 256};
  EXPECT_EQ(t.decode(eot), "a<|endoftext|>");
  const std::vector<std::int32_t> bad = {'a', 257};
  ZORO_EXPECT_ERROR(InvalidArgument, t.decode(bad), "token id 257 at position 1");
}

// GPT-2's bytes_to_unicode, written again here from its definition (the test's oracle).
std::string byte_symbol(int b) {
  static const std::vector<std::uint32_t> map = [] {
    std::vector<std::uint32_t> m(256);
    std::uint32_t next = 256;
    for (int c = 0; c < 256; ++c) {
      const bool printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174;
      m[c] = printable ? static_cast<std::uint32_t>(c) : next++;
    }
    return m;
  }();
  const std::uint32_t cp = map[static_cast<std::size_t>(b)];
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// A tiny GPT-2-style vocabulary: the 256 byte symbols (ids 0..255 in byte order), the merge
// results, then <|endoftext|>.
struct TinyBpe {
  std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"},   {"he", "ll"}, {"hell", "o"},  {"Ġ", "w"},
      {"o", "r"}, {"Ġw", "or"}, {"l", "d"},   {"Ġwor", "ld"}, {"e", "l"}};
  nlohmann::json encoder = nlohmann::json::object();
  std::string merges_text = "#version: 0.2\n";
  TinyBpe() {
    int id = 0;
    for (int b = 0; b < 256; ++b) encoder[byte_symbol(b)] = id++;
    for (const auto& [l, r] : merges) {
      encoder[l + r] = id++;
      merges_text += l + " " + r + "\n";
    }
    encoder["<|endoftext|>"] = id++;
  }
  std::int32_t id(const std::string& symbol) const { return encoder.at(symbol).get<int>(); }
  std::unique_ptr<Gpt2BpeTokenizer> make() const {
    return Gpt2BpeTokenizer::from_strings(encoder.dump(), merges_text, "encoder.json", "vocab.bpe");
  }
};

TEST(Gpt2Bpe, AppliesMergesByRank) {
  const TinyBpe bpe;
  const auto t = bpe.make();
  EXPECT_EQ(t->vocab_size(), 256 + 10 + 1);
  EXPECT_EQ(t->eot_id(), 266);
  // "hello": h e -> he, l l -> ll, he ll -> hell, hell o -> hello; " world" likewise.
  const std::vector<std::int32_t> hello_world = {bpe.id("hello"), bpe.id("Ġworld")};
  EXPECT_EQ(t->encode("hello world"), hello_world);
  // "ell": "l l" (rank 1) wins over "e l" (rank 9) although "e l" comes first.
  const std::vector<std::int32_t> ell = {bpe.id("e"), bpe.id("ll")};
  EXPECT_EQ(t->encode("ell"), ell);
  const std::vector<std::int32_t> el = {bpe.id("el")};
  EXPECT_EQ(t->encode("el"), el);
  // Unmerged bytes stay byte tokens; a space before a non-letter stays its own symbol.
  const std::vector<std::int32_t> hi = {bpe.id("h"), bpe.id("i"), bpe.id("Ġ"), bpe.id("!")};
  EXPECT_EQ(t->encode("hi !"), hi);
  EXPECT_EQ(t->decode(t->encode("hello world")), "hello world");
  const std::vector<std::int32_t> eot = {bpe.id("hello"), t->eot_id()};
  EXPECT_EQ(t->decode(eot), "hello<|endoftext|>");
}

TEST(Gpt2Bpe, RoundTripsRandomBytes) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(2);
  const auto t = TinyBpe().make();
  for (int trial = 0; trial < 50; ++trial) {
    // Mix random bytes with the letters the merges know, so merges fire inside noise.
    std::string text;
    const auto noise = zoro::testing::random_bytes(rng, 64);
    for (const std::uint8_t b : noise) {
      text.push_back(static_cast<char>(b));
      if (b % 3 == 0) text += (b % 2 == 0) ? " hello" : "ll world";
    }
    const auto ids = t->encode(text);
    for (const std::int32_t id : ids) {
      ASSERT_TRUE(id >= 0 && id < t->vocab_size() && id != t->eot_id()) << id;
    }
    ASSERT_EQ(t->decode(ids), text);
  }
}

TEST(Gpt2Bpe, LargeTextsEncodePieceByPieceWithTheSameIds) {
  ZORO_TRACE_SEED();
  auto rng = zoro::testing::make_rng(3);
  const auto t = TinyBpe().make();
  const std::vector<std::string> words = {"hello", " world", "\n",       "\n\n", " ",  "ll",
                                          "'s",    "!",      "\xC3\xA9", "42",   "\t", "\xFF"};
  std::string text;
  for (int i = 0; i < 3000; ++i) text += words[rng() % words.size()];
  const auto whole = t->encode(text, text.size() + 1);
  for (const std::size_t chunk : {1, 7, 64, 1000}) {
    EXPECT_EQ(t->encode(text, chunk), whole) << "chunk " << chunk;
  }
  EXPECT_EQ(t->encode(text), whole);
  EXPECT_EQ(t->decode(whole), text);
}

TEST(Gpt2Bpe, PreTokenizesLikeGpt2Regex) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize("Hello world's  test\n\n123 abc!!  "),
            (V{"Hello", " world", "'s", " ", " test", "\n", "\n", "123", " abc", "!!", "  "}));
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize("I'm don't we'll 3.14"),
            (V{"I", "'m", " don", "'t", " we", "'ll", " 3", ".", "14"}));
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize("h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC"
                                           "5"),
            (V{"h\xC3\xA9llo", " w\xC3\xB6rld", " \xE2\x82\xAC", "5"}));
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize("a\tb \n"), (V{"a", "\t", "b", " \n"}));
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize("'Quote'"), (V{"'", "Quote", "'"}));
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize(""), V{});
  // Invalid UTF-8 bytes are "other" characters, one byte each, and nothing is lost.
  EXPECT_EQ(Gpt2BpeTokenizer::pre_tokenize("a\xFF\xFE b"), (V{"a", "\xFF\xFE", " b"}));
}

TEST(Gpt2Bpe, LoadsFromFiles) {
  const TinyBpe bpe;
  const TempDir dir;
  testing::write_text(dir.file("encoder.json"), bpe.encoder.dump());
  testing::write_text(dir.file("vocab.bpe"), bpe.merges_text);
  const auto t = make_tokenizer("gpt2", dir.file("encoder.json"), dir.file("vocab.bpe"));
  EXPECT_EQ(t->name(), "gpt2");
  EXPECT_EQ(t->decode(t->encode("hello world")), "hello world");
  ZORO_EXPECT_ERROR(IoError,
                    make_tokenizer("gpt2", dir.file("missing.json"), dir.file("vocab.bpe")),
                    "missing.json");
  ZORO_EXPECT_ERROR(InvalidArgument, make_tokenizer("gpt2", "", ""), "--bpe-encoder");
  ZORO_EXPECT_ERROR(InvalidArgument, make_tokenizer("wordpiece", "", ""),
                    "unknown tokenizer 'wordpiece'");
  EXPECT_EQ(make_tokenizer("byte", "", "")->vocab_size(), 257);
}

TEST(Gpt2Bpe, RejectsMalformedFiles) {
  const TinyBpe good;
  const auto load = [](const std::string& encoder, const std::string& merges) {
    return Gpt2BpeTokenizer::from_strings(encoder, merges, "enc.json", "merges.bpe");
  };
  ZORO_EXPECT_ERROR(InvalidArgument, load("{\"a\": 0,", good.merges_text),
                    "BPE encoder 'enc.json' is not valid JSON");
  ZORO_EXPECT_ERROR(InvalidArgument, load("[1, 2]", good.merges_text), "must be a JSON object");
  {
    auto e = good.encoder;
    e["!"] = "zero";
    ZORO_EXPECT_ERROR(InvalidArgument, load(e.dump(), good.merges_text), "not an integer");
  }
  {
    auto e = good.encoder;
    e["!"] = 5;  // id 5 twice, and one id missing
    ZORO_EXPECT_ERROR(InvalidArgument, load(e.dump(), good.merges_text), "is used twice");
  }
  {
    auto e = good.encoder;
    e["!"] = 100000;
    ZORO_EXPECT_ERROR(InvalidArgument, load(e.dump(), good.merges_text), "outside [0, 267)");
  }
  {
    auto e = good.encoder;
    e.erase("<|endoftext|>");
    ZORO_EXPECT_ERROR(InvalidArgument, load(e.dump(), good.merges_text), "<|endoftext|>");
  }
  {
    auto e = good.encoder;  // drop byte 'A' (65), renumbering the rest densely
    nlohmann::json dense = nlohmann::json::object();
    int id = 0;
    for (const auto& [k, v] : e.items()) {
      if (k != "A") dense[k] = id++;
    }
    ZORO_EXPECT_ERROR(InvalidArgument, load(dense.dump(), good.merges_text),
                      "lacks the token of byte 65");
  }
  ZORO_EXPECT_ERROR(InvalidArgument, load(good.encoder.dump(), "#version: 0.2\nh e\nhe\n"),
                    "merges.bpe' line 3 ('he') is not two symbols");
  ZORO_EXPECT_ERROR(InvalidArgument, load(good.encoder.dump(), "h e\na b c\n"), "line 2 ('a b c')");
  ZORO_EXPECT_ERROR(InvalidArgument, load(good.encoder.dump(), "h e\nx y\n"),
                    "line 2: the merge 'xy' is not a token");
  ZORO_EXPECT_ERROR(InvalidArgument, load(good.encoder.dump(), "h e\nzz y\n"),
                    "line 2: 'zz' is not a token");
  // CRLF line ends and a missing version line are accepted.
  EXPECT_NO_THROW(load(good.encoder.dump(), "h e\r\nl l\r\n"));
}

}  // namespace
}  // namespace zoro::train
