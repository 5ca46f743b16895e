#include "examples/zoro_train/io/tokenizer.h"

#include <algorithm>
#include <array>
#include <limits>
#include <nlohmann/json.hpp>

#include "runtime/base/check.h"
#include "runtime/base/file_util.h"

namespace zoro::train {

// ---- ByteTokenizer --------------------------------------------------------------------------

std::vector<std::int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> out;
  encode_into(text, out);
  return out;
}

void ByteTokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out) {
  out.reserve(out.size() + text.size());
  for (const char c : text) out.push_back(static_cast<unsigned char>(c));
}

std::string ByteTokenizer::decode(std::span<const std::int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    if (id == kEot) {
      out += "<|endoftext|>";
      continue;
    }
    ZORO_CHECK(id >= 0 && id < 256, "token id " << id << " at position " << i
                                                << " is outside the byte vocabulary [0, 257)");
    out.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  }
  return out;
}

// ---- UTF-8 and GPT-2's byte <-> character map ----------------------------------------------

namespace {

constexpr std::uint32_t kInvalid = std::numeric_limits<std::uint32_t>::max();

void append_utf8(std::uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes the code point at text[i]; sets `len`. Invalid or truncated sequences, overlong
// forms and surrogates give kInvalid with len 1 (the byte stands alone).
std::uint32_t decode_utf8(std::string_view text, std::size_t i, std::size_t& len) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  len = 1;
  if (b0 < 0x80) return b0;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  std::uint32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return kInvalid;
  }
  if (i + n > text.size()) return kInvalid;
  for (std::size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return kInvalid;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalid;
  len = n;
  return cp;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others are moved
// to 256 + n in byte order, so every byte has a visible character.
struct ByteMap {
  std::array<std::uint32_t, 256> to_char{};
  std::array<std::int16_t, 512> to_byte{};  // -1: not a mapped character
  std::array<std::string, 256> utf8;        // to_char as UTF-8
  ByteMap() {
    to_byte.fill(-1);
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    std::uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_char[b] = printable(b) ? static_cast<std::uint32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<std::int16_t>(b);
      append_utf8(to_char[b], utf8[b]);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// The raw bytes of a byte-mapped token; false when a character is not a mapped one.
bool from_mapped(std::string_view mapped, std::string& raw) {
  raw.clear();
  for (std::size_t i = 0; i < mapped.size();) {
    std::size_t len = 0;
    const std::uint32_t cp = decode_utf8(mapped, i, len);
    if (cp >= byte_map().to_byte.size() || byte_map().to_byte[cp] < 0) return false;
    raw.push_back(static_cast<char>(byte_map().to_byte[cp]));
    i += len;
  }
  return true;
}

// ---- the pre-tokenizer's character classes -------------------------------------------------

enum class CharClass : std::uint8_t { kSpace, kLetter, kNumber, kOther };

bool in(std::uint32_t cp, std::uint32_t lo, std::uint32_t hi) { return cp >= lo && cp <= hi; }

bool is_space(std::uint32_t cp) {
  return in(cp, 0x09, 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         in(cp, 0x2000, 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

bool is_number(std::uint32_t cp) {
  if (cp < 0x80) return in(cp, '0', '9');
  if (cp < 0x100) return cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || in(cp, 0xBC, 0xBE);
  // Decimal digits of the main scripts, and the number-form blocks.
  static constexpr std::uint32_t kRanges[][2] = {
      {0x0660, 0x0669}, {0x06F0, 0x06F9}, {0x07C0, 0x07C9}, {0x0966, 0x096F},  {0x09E6, 0x09EF},
      {0x0A66, 0x0A6F}, {0x0AE6, 0x0AEF}, {0x0B66, 0x0B6F}, {0x0BE6, 0x0BF2},  {0x0C66, 0x0C6F},
      {0x0CE6, 0x0CEF}, {0x0D66, 0x0D6F}, {0x0E50, 0x0E59}, {0x0ED0, 0x0ED9},  {0x0F20, 0x0F33},
      {0x1040, 0x1049}, {0x17E0, 0x17E9}, {0x1810, 0x1819}, {0x2070, 0x2070},  {0x2074, 0x2079},
      {0x2080, 0x2089}, {0x2150, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF},  {0x2776, 0x2793},
      {0x3007, 0x3007}, {0x3021, 0x3029}, {0xFF10, 0xFF19}, {0x1D7CE, 0x1D7FF}};
  for (const auto& r : kRanges) {
    if (in(cp, r[0], r[1])) return true;
  }
  return false;
}

bool is_letter(std::uint32_t cp) {
  if (cp < 0x80) return in(cp, 'A', 'Z') || in(cp, 'a', 'z');
  if (cp < 0x100) {
    return cp == 0xAA || cp == 0xB5 || cp == 0xBA || (cp >= 0xC0 && cp != 0xD7 && cp != 0xF7);
  }
  // Outside Latin-1: letters unless in a block of marks, punctuation or symbols.
  static constexpr std::uint32_t kNotLetters[][2] = {
      {0x0300, 0x036F}, {0x2000, 0x2BFF}, {0x2E00, 0x2E7F},   {0x3000, 0x3004},   {0x3008, 0x3020},
      {0x3030, 0x303F}, {0xD800, 0xF8FF}, {0xFE00, 0xFE6F},   {0xFF00, 0xFF20},   {0xFF3B, 0xFF40},
      {0xFF5B, 0xFF65}, {0xFFF0, 0xFFFF}, {0x1F000, 0x1FBFF}, {0xE0000, 0x10FFFF}};
  for (const auto& r : kNotLetters) {
    if (in(cp, r[0], r[1])) return false;
  }
  return true;
}

CharClass classify(std::uint32_t cp) {
  if (cp == kInvalid) return CharClass::kOther;
  if (is_space(cp)) return CharClass::kSpace;
  if (is_number(cp)) return CharClass::kNumber;
  if (is_letter(cp)) return CharClass::kLetter;
  return CharClass::kOther;
}

struct Char {
  std::size_t begin;  // byte offset
  std::uint32_t cp;
  CharClass cls;
};

}  // namespace

// ---- Gpt2BpeTokenizer -----------------------------------------------------------------------

std::vector<std::string_view> Gpt2BpeTokenizer::pre_tokenize(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 0;
    const std::uint32_t cp = decode_utf8(text, i, len);
    chars.push_back({i, cp, classify(cp)});
    i += len;
  }
  const std::size_t n = chars.size();
  const auto byte_at = [&](std::size_t k) { return k < n ? chars[k].begin : text.size(); };
  const auto cp_at = [&](std::size_t k) { return k < n ? chars[k].cp : kInvalid; };

  std::vector<std::string_view> out;
  std::size_t i = 0;
  const auto emit = [&](std::size_t end) {
    out.push_back(text.substr(byte_at(i), byte_at(end) - byte_at(i)));
    i = end;
  };
  while (i < n) {
    // 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2)
    if (cp_at(i) == '\'') {
      const std::uint32_t a = cp_at(i + 1);
      const std::uint32_t b = cp_at(i + 2);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        emit(i + 2);
        continue;
      }
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        emit(i + 3);
        continue;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional ASCII space, then a run.
    const std::size_t start = (cp_at(i) == ' ' && i + 1 < n) ? i + 1 : i;
    if (chars[start].cls != CharClass::kSpace) {
      const CharClass cls = chars[start].cls;
      std::size_t end = start + 1;
      while (end < n && chars[end].cls == cls) ++end;
      emit(end);
      continue;
    }
    // '\s+(?!\S)|\s+': a whitespace run; before a non-space, its last character is left to
    // start the next pre-token (' word'), unless the run is a single character.
    std::size_t end = i + 1;
    while (end < n && chars[end].cls == CharClass::kSpace) ++end;
    if (end < n && end - i >= 2) --end;
    emit(end);
  }
  return out;
}

std::unique_ptr<Gpt2BpeTokenizer> Gpt2BpeTokenizer::from_files(const std::string& encoder_json_path,
                                                               const std::string& merges_path) {
  const std::string encoder = read_file(encoder_json_path);
  const std::string merges = read_file(merges_path);
  return from_strings(encoder, merges, encoder_json_path, merges_path);
}

std::unique_ptr<Gpt2BpeTokenizer> Gpt2BpeTokenizer::from_strings(std::string_view encoder_json,
                                                                 std::string_view merges,
                                                                 std::string_view encoder_name,
                                                                 std::string_view merges_name) {
  std::unique_ptr<Gpt2BpeTokenizer> t(new Gpt2BpeTokenizer());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(encoder_json.begin(), encoder_json.end());
  } catch (const nlohmann::json::exception& e) {
    ZORO_THROW(InvalidArgument,
               "BPE encoder '" << encoder_name << "' is not valid JSON: " << e.what());
  }
  ZORO_CHECK(j.is_object() && !j.empty(),
             "BPE encoder '" << encoder_name << "' must be a JSON object of token -> id");
  const std::size_t vocab = j.size();
  ZORO_CHECK(vocab < static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
             "BPE encoder '" << encoder_name << "' has too many tokens");
  t->id_to_bytes_.assign(vocab, std::string());
  std::vector<bool> seen(vocab, false);
  std::string raw;
  for (const auto& [token, value] : j.items()) {
    ZORO_CHECK(value.is_number_integer(), "BPE encoder '" << encoder_name << "': token '" << token
                                                          << "' has id " << value.dump()
                                                          << ", not an integer");
    const auto id = value.get<std::int64_t>();
    ZORO_CHECK(id >= 0 && static_cast<std::size_t>(id) < vocab,
               "BPE encoder '" << encoder_name << "': token '" << token << "' has id " << id
                               << ", outside [0, " << vocab << ") (ids must be 0..n-1)");
    ZORO_CHECK(!seen[static_cast<std::size_t>(id)],
               "BPE encoder '" << encoder_name << "': id " << id << " is used twice");
    ZORO_CHECK(from_mapped(token, raw), "BPE encoder '"
                                            << encoder_name << "': token '" << token
                                            << "' has a character outside GPT-2's byte alphabet");
    seen[static_cast<std::size_t>(id)] = true;
    t->id_to_bytes_[static_cast<std::size_t>(id)] = raw;
    t->token_to_id_.emplace(token, static_cast<std::int32_t>(id));
  }
  for (int b = 0; b < 256; ++b) {
    ZORO_CHECK(t->token_to_id_.count(byte_map().utf8[b]) == 1,
               "BPE encoder '" << encoder_name << "' lacks the token of byte " << b << " ('"
                               << byte_map().utf8[b] << "'): every byte needs one");
  }
  const auto eot = t->token_to_id_.find("<|endoftext|>");
  ZORO_CHECK(eot != t->token_to_id_.end(),
             "BPE encoder '" << encoder_name << "' has no \"<|endoftext|>\" token");
  t->eot_ = eot->second;

  std::size_t line_no = 0;
  int rank = 0;
  std::size_t pos = 0;
  while (pos < merges.size()) {
    std::size_t end = merges.find('\n', pos);
    if (end == std::string_view::npos) end = merges.size();
    std::string_view line = merges.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const std::size_t space = line.find(' ');
    ZORO_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string_view::npos,
               "BPE merges '" << merges_name << "' line " << line_no << " ('" << line
                              << "') is not two symbols separated by one space");
    const std::string left(line.substr(0, space));
    const std::string right(line.substr(space + 1));
    for (const std::string* part : {&left, &right}) {
      ZORO_CHECK(t->token_to_id_.count(*part) == 1,
                 "BPE merges '" << merges_name << "' line " << line_no << ": '" << *part
                                << "' is not a token of '" << encoder_name << "'");
    }
    ZORO_CHECK(t->token_to_id_.count(left + right) == 1,
               "BPE merges '" << merges_name << "' line " << line_no << ": the merge '"
                              << left + right << "' is not a token of '" << encoder_name << "'");
    t->merge_rank_.emplace(left + ' ' + right, rank++);  // a repeated merge keeps its first rank
  }
  return t;
}

void Gpt2BpeTokenizer::bpe(std::string_view word, std::vector<std::int32_t>& out) const {
  std::vector<std::string> symbols;
  symbols.reserve(word.size());
  for (const char c : word) symbols.push_back(byte_map().utf8[static_cast<unsigned char>(c)]);
  std::string key;
  while (symbols.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::size_t best_at = 0;
    for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
      key.assign(symbols[k]).append(1, ' ').append(symbols[k + 1]);
      const auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best) {
        best = it->second;
        best_at = k;
      }
    }
    if (best == std::numeric_limits<int>::max()) break;
    // Merge every occurrence of the best pair, left to right.
    const std::string left = symbols[best_at];
    const std::string right = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (std::size_t k = 0; k < symbols.size(); ++k) {
      if (k + 1 < symbols.size() && symbols[k] == left && symbols[k + 1] == right) {
        merged.push_back(left + right);
        ++k;
      } else {
        merged.push_back(std::move(symbols[k]));
      }
    }
    symbols = std::move(merged);
  }
  for (const std::string& s : symbols) {
    const auto it = token_to_id_.find(s);
    ZORO_ASSERT(it != token_to_id_.end());  // bytes and merge results were checked at load
    out.push_back(it->second);
  }
}

std::vector<std::int32_t> Gpt2BpeTokenizer::encode(std::string_view text) const {
  return encode(text, std::size_t{1} << 20);
}

namespace {
// The end of the piece of `text` that starts at `begin` and is about `chunk_bytes` long: just
// after a '\n' whose neighbours are not whitespace. There the regex always emits the "\n"
// alone (a one-character run before a non-space) and starts a new pre-token after it, so
// pre-tokenizing the pieces separately gives exactly the pre-tokens of the whole. Such a
// position is an ASCII byte boundary, never inside a UTF-8 sequence.
std::size_t piece_end(std::string_view text, std::size_t begin, std::size_t chunk_bytes) {
  const auto space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' ||
           static_cast<unsigned char>(c) >= 0x80;  // conservative: no multi-byte space
  };
  for (std::size_t p = begin + std::max<std::size_t>(chunk_bytes, 2); p < text.size(); ++p) {
    if (text[p - 1] == '\n' && !space(text[p - 2]) && !space(text[p])) return p;
  }
  return text.size();
}
}  // namespace

std::vector<std::int32_t> Gpt2BpeTokenizer::encode(std::string_view text,
                                                   std::size_t chunk_bytes) const {
  std::vector<std::int32_t> out;
  out.reserve(text.size() / 3 + 1);
  // Text repeats its words: remember each pre-token's ids (where they first went in `out`)
  // for the length of this call.
  std::unordered_map<std::string_view, std::pair<std::size_t, std::size_t>> cache;
  std::vector<std::int32_t> ids;
  for (std::size_t begin = 0; begin < text.size();) {
    const std::size_t end = piece_end(text, begin, chunk_bytes);
    for (const std::string_view word : pre_tokenize(text.substr(begin, end - begin))) {
      if (const auto it = cache.find(word); it != cache.end()) {
        const auto [first, count] = it->second;
        for (std::size_t k = 0; k < count; ++k) {
          const std::int32_t id = out[first + k];  // read before push_back may reallocate
          out.push_back(id);
        }
        continue;
      }
      ids.clear();
      bpe(word, ids);
      cache.emplace(word, std::make_pair(out.size(), ids.size()));
      out.insert(out.end(), ids.begin(), ids.end());
    }
    begin = end;
  }
  return out;
}

std::string Gpt2BpeTokenizer::decode(std::span<const std::int32_t> ids) const {
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    ZORO_CHECK(id >= 0 && id < vocab_size(), "token id " << id << " at position " << i
                                                         << " is outside the GPT-2 vocabulary [0, "
                                                         << vocab_size() << ")");
    out += id_to_bytes_[static_cast<std::size_t>(id)];
  }
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(std::string_view name, const std::string& bpe_encoder,
                                          const std::string& bpe_merges) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") {
    ZORO_CHECK(!bpe_encoder.empty() && !bpe_merges.empty(),
               "the gpt2 tokenizer needs --bpe-encoder (encoder.json) and --bpe-merges "
               "(vocab.bpe)");
    return Gpt2BpeTokenizer::from_files(bpe_encoder, bpe_merges);
  }
  ZORO_THROW(InvalidArgument, "unknown tokenizer '" << name << "' (byte or gpt2)");
}

}  // namespace zoro::train
