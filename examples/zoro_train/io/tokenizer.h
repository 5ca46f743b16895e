// Tokenizers of zoro-train: text <-> int32 token ids.
//
// Contract:
// - encode() accepts any bytes (not only valid UTF-8) and never fails on text; decode()
//   throws InvalidArgument naming the first id outside [0, vocab_size()).
// - decode(encode(s)) == s for every byte string s (both tokenizers are byte-level, so
//   nothing is lost). The end-of-text id is never produced by encode(): text is text, even
//   "<|endoftext|>"; it decodes to "<|endoftext|>".
// - Both are immutable after construction: encode/decode may run on many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zoro::train {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(std::span<const std::int32_t> ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual std::int32_t eot_id() const = 0;
  // "byte" or "gpt2", for logs.
  virtual std::string name() const = 0;
};

// Byte b -> id b; end-of-text is 256; vocab 257.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kEot = 256;
  std::vector<std::int32_t> encode(std::string_view text) const override;
  // Appends the ids of `text` to `out` (no temporary vector: large mapped files).
  static void encode_into(std::string_view text, std::vector<std::int32_t>& out);
  std::string decode(std::span<const std::int32_t> ids) const override;
  int vocab_size() const override { return 257; }
  std::int32_t eot_id() const override { return kEot; }
  std::string name() const override { return "byte"; }
};

// GPT-2's byte-level BPE (the encoder.json / vocab.bpe pair OpenAI published):
//   1. the text is split into pre-tokens the way GPT-2's regex does
//      ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+), written
//      by hand. Letters, numbers and spaces are classified exactly for ASCII and Latin-1 and
//      by Unicode block elsewhere (main scripts are letters; punctuation, symbol, arrow,
//      box-drawing, CJK-punctuation and emoji blocks are not; the decimal digits of the main
//      scripts are numbers), close to but not bit-identical with \p{L}/\p{N} for rare
//      characters. Bytes that are not valid UTF-8 are each one "other" character.
//   2. each pre-token's bytes are mapped to printable characters (GPT-2's bytes_to_unicode);
//   3. adjacent symbols are merged, lowest merge rank first, until no ranked pair is left;
//   4. each symbol is looked up in encoder.json.
// from_files() validates both files and throws IoError (unreadable) or InvalidArgument
// (malformed: not a JSON object of string -> id, ids not exactly 0..n-1, a byte symbol
// missing, no "<|endoftext|>", a merges line that is not two symbols, a merge whose parts or
// result are not in the vocabulary) naming the file and, for merges, the line.
class Gpt2BpeTokenizer final : public Tokenizer {
 public:
  static std::unique_ptr<Gpt2BpeTokenizer> from_files(const std::string& encoder_json_path,
                                                      const std::string& merges_path);
  // The same from the files' contents; `encoder_name`/`merges_name` appear in errors.
  static std::unique_ptr<Gpt2BpeTokenizer> from_strings(std::string_view encoder_json,
                                                        std::string_view merges,
                                                        std::string_view encoder_name,
                                                        std::string_view merges_name);

  std::vector<std::int32_t> encode(std::string_view text) const override;
  // encode() pre-tokenizes a large text piece by piece, each about `chunk_bytes` long and cut
  // only where GPT-2's regex itself separates pre-tokens (after a lone "\n" between two
  // non-space characters), so memory stays bounded and the ids are exactly those of one piece.
  std::vector<std::int32_t> encode(std::string_view text, std::size_t chunk_bytes) const;
  std::string decode(std::span<const std::int32_t> ids) const override;
  int vocab_size() const override { return static_cast<int>(id_to_bytes_.size()); }
  std::int32_t eot_id() const override { return eot_; }
  std::string name() const override { return "gpt2"; }

  // The pre-tokenizer alone (step 1), exposed for tests: views into `text`.
  static std::vector<std::string_view> pre_tokenize(std::string_view text);

 private:
  Gpt2BpeTokenizer() = default;
  void bpe(std::string_view word, std::vector<std::int32_t>& out) const;

  std::unordered_map<std::string, std::int32_t> token_to_id_;
  std::vector<std::string> id_to_bytes_;             // each token's raw bytes, for decode
  std::unordered_map<std::string, int> merge_rank_;  // "left right" (byte-mapped) -> rank
  std::int32_t eot_ = 0;
};

// Builds the tokenizer `name` ("byte", or "gpt2" with both files). InvalidArgument otherwise.
std::unique_ptr<Tokenizer> make_tokenizer(std::string_view name, const std::string& bpe_encoder,
                                          const std::string& bpe_merges);

}  // namespace zoro::train
