#!/usr/bin/env python3
"""Official-numerics reference logits for the existing fixtures (tests/data/fixtures/<name>/).

The fixtures' `reference.safetensors` is transformers' DeepSeek-V4 in plain float32: its KV cache
holds f32 rows. dsv4.cpp's `kv::Scheme::official` stores and reads the cache the way DeepSeek's
own inference code does, so it cannot match that reference tightly. This script reruns the SAME
model (the fixture's `model*.safetensors`, dequantized exactly as make_fixtures.py does) on the
SAME tokens (`reference.safetensors["tokens"]`) with transformers, after patching two functions
of the installed modeling module in memory (the package on disk is not modified):

  eager_attention_forward (every attention layer: sliding window + compressed entries)
    (1) every key/value row, sliding-window rows and compressed entries alike (after RoPE, as
        the cache stores them), is rounded like kv/record_codec.h `encode_v4_entry`: the first
        head_dim - rope_dim dims to FP8 e4m3 in blocks of 64 with ue8m0 scales
        s = 2^ceil(log2(max(amax, 1e-4) * f32(1/448))), round to nearest even, saturating; the
        last rope_dim dims to bf16 (round to nearest even). K = V = the rounded rows.
    (4) the queries are rounded to bf16 (RNE) before q.k; scores, softmax, PV stay f32.
  DeepseekV4IndexerScorer.forward (the CSA lightning indexer)
    (2) indexer keys and (3) indexer queries (after RoPE) are rotated by the normalized
        Walsh-Hadamard transform over index_head_dim (the butterfly of model.cpp hadamard_f32,
        then * f32(1/sqrt(n))), then rounded to FP4 e2m1 in blocks of 32 with ue8m0 scales
        s = 2^ceil(log2(max(amax, 6*2^-126) * f32(1/6))), RNE, saturating at +-6.
  (5) everything else is transformers' float32 computation, unchanged.

Rounding at the point of use gives the same values as rounding when a row is written (each row
is rounded on its own), so the patched model is also correct with the transformers cache; the
script checks that (teacher-forced decode vs prefill) and records a greedy continuation.

Writes tests/data/fixtures/<name>/reference_official.safetensors (format
`dsv4-reference-official`, version 1): `tokens` [S] I32 (a copy, to bind the file to its
fixture), `logits` [S, V] F32 (prefill, every position), `layers.<i>.out.{sum,sumsq}` [S] (residual
streams after layer i, float64 sums), `layers.<i>.indexer.margin` / `layers.<i>.router.margin`
[S] (top-k selection margins of this run, +inf where the choice is forced), `margin.min` [S]
(the smallest of them per position), `greedy.prompt` / `greedy.tokens` / `greedy.logits` /
`greedy.margin` (16-step greedy continuation with the cache), `decode.max_abs_diff` [S].

`--check` regenerates every file in a temporary directory and requires byte equality.
See tools/reference/README.md ("Official-numerics reference") and docs/kv-storage.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (same directory; shares the loaders and the writer)
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mdv4  # noqa: E402

FORMAT = "dsv4-reference-official"
VERSION = "1"
FIXTURE_NAMES = ("tiny", "long", "wide")

KV_FP8_BLOCK = 64  # record_codec.h kFp8Block
KV_FP8_AMAX_FLOOR = 1e-4
IDX_FP4_BLOCK = 32  # record_codec.h kFp4Block
IDX_FP4_AMAX_FLOOR = 6.0 * 2.0**-126
F32_INV_448 = torch.tensor(1.0 / 448.0, dtype=torch.float32)  # f32(1/448), as the C++ codec
F32_INV_6 = torch.tensor(1.0 / 6.0, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Rounding (torch, float32 in and out)
# ----------------------------------------------------------------------------------------------
def minifloat_grid(kind: str) -> torch.Tensor:
    """Non-negative finite values of e4m3fn (codes 0..126) or e2m1 (codes 0..7), ascending; the
    code's lowest bit is the mantissa's lowest bit, so "ties to the even code" is RNE."""
    if kind == "e2m1":
        return torch.tensor(mf.E2M1_VALUES[:8], dtype=torch.float64)
    vals = []
    for c in range(127):
        e, m = c >> 3, c & 7
        vals.append(m * 2.0**-9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    return torch.tensor(vals, dtype=torch.float64)


GRIDS = {"e4m3": minifloat_grid("e4m3"), "e2m1": minifloat_grid("e2m1")}


def round_to_grid(x: torch.Tensor, kind: str) -> torch.Tensor:
    """x f32 (already clamped to the grid's range) -> nearest grid value, ties to the even code.

    Independent of torch's float8 casts (checked against them in self_test). Distances are taken
    in float64, where differences of these f32 values and grid points are exact."""
    grid = GRIDS[kind]
    a = x.abs().to(torch.float64)
    hi = torch.searchsorted(grid, a).clamp(1, grid.numel() - 1)
    lo = hi - 1
    d_lo, d_hi = a - grid[lo], grid[hi] - a
    pick = torch.where(d_hi < d_lo, hi, lo)
    pick = torch.where(d_hi == d_lo, torch.where(lo % 2 == 0, lo, hi), pick)
    return (torch.sign(x.to(torch.float64)) * grid[pick]).to(torch.float32)


def ue8m0_exponent(amax: torch.Tensor, inv_qmax: torch.Tensor) -> torch.Tensor:
    """k with 2^k = 2^ceil(log2(amax * f32(1/qmax))), the product rounded to f32 first and the
    ceiling read off its bits (record_codec pow2_ceil_exponent), clamped to [-126, 127]."""
    t = (amax.to(torch.float32) * inv_qmax).to(torch.float64)  # f32 product, exact in f64
    mant, exp = torch.frexp(t)  # t = mant * 2^exp, mant in [0.5, 1)
    k = torch.where(mant == 0.5, exp - 1, exp)
    return k.clamp(-126, 127)


def pow2(k: torch.Tensor) -> torch.Tensor:
    """2^k as f32 from its bit pattern (exact), -126 <= k <= 127."""
    return ((k.to(torch.int32) + 127) << 23).view(torch.float32)


def fp8_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """act_quant(x, block, ue8m0) quantize-dequantize along the last dim (a multiple of block)."""
    shape = x.shape
    xb = x.reshape(*shape[:-1], shape[-1] // block, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(KV_FP8_AMAX_FLOOR)
    s = pow2(ue8m0_exponent(amax, F32_INV_448))
    q = round_to_grid((xb / s).clamp(-448.0, 448.0), "e4m3")
    return (q * s).reshape(shape)


def fp4_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """fp4_act_quant(x, block) quantize-dequantize along the last dim (a multiple of block)."""
    shape = x.shape
    xb = x.reshape(*shape[:-1], shape[-1] // block, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(IDX_FP4_AMAX_FLOOR)
    s = pow2(ue8m0_exponent(amax, F32_INV_6))
    q = round_to_grid((xb / s).clamp(-6.0, 6.0), "e2m1")
    return (q * s).reshape(shape)


def round_bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(torch.float32)  # round to nearest even


def round_kv_rows(x: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """[..., head_dim] f32 rows -> the values an official V4 KV record decodes to."""
    x = x.to(torch.float32)
    nope = x.shape[-1] - rope_dim
    return torch.cat([fp8_blocks(x[..., :nope], KV_FP8_BLOCK), round_bf16(x[..., nope:])], dim=-1)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Normalized Walsh-Hadamard over the last dim, the butterfly order of model.cpp hadamard_f32
    (pairs (j, j+h) for h = 1, 2, 4, ...: a+b, a-b in f32), then * f32(1/sqrt(n))."""
    x = x.to(torch.float32)
    n = x.shape[-1]
    assert n & (n - 1) == 0, n
    lead = x.shape[:-1]
    h = 1
    while h < n:
        v = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = v[..., 0, :], v[..., 1, :]
        x = torch.stack([a + b, a - b], dim=-2).reshape(*lead, n)
        h *= 2
    return x * torch.tensor(1.0 / math.sqrt(n), dtype=torch.float32)


def indexer_round(x: torch.Tensor) -> torch.Tensor:
    return fp4_blocks(hadamard(x), IDX_FP4_BLOCK)


# ----------------------------------------------------------------------------------------------
# The patches
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def official_numerics(rope_dim: int, counters: dict):
    """Patch the modeling module's attention and indexer scorer for the duration of the block."""
    orig_attn = mdv4.eager_attention_forward
    orig_scorer = mdv4.DeepseekV4IndexerScorer.forward

    def attn(module, query, key, value, attention_mask, *args, **kwargs):
        assert key is value, "DeepSeek-V4 attention: K and V are the same rows"
        kv = round_kv_rows(key, rope_dim)
        counters["kv_rows"] += kv.shape[0] * kv.shape[1] * kv.shape[2]
        return orig_attn(module, round_bf16(query), kv, kv, attention_mask, *args, **kwargs)

    def scorer(self, q, compressed_kv, hidden_states):
        counters["indexer_calls"] += 1
        return orig_scorer(self, indexer_round(q), indexer_round(compressed_kv), hidden_states)

    mdv4.eager_attention_forward = attn
    mdv4.DeepseekV4IndexerScorer.forward = scorer
    try:
        yield
    finally:
        mdv4.eager_attention_forward = orig_attn
        mdv4.DeepseekV4IndexerScorer.forward = orig_scorer


# ----------------------------------------------------------------------------------------------
# Self test of the rounding helpers (runs before every generation; ~1 s)
# ----------------------------------------------------------------------------------------------
def self_test():
    g = torch.Generator().manual_seed(7)
    # e4m3: every grid point, every midpoint and its f32 neighbours, random values; against
    # torch's float8_e4m3fn cast (round to nearest even).
    grid = GRIDS["e4m3"].to(torch.float32)
    mids = ((GRIDS["e4m3"][1:] + GRIDS["e4m3"][:-1]) / 2).to(torch.float32)
    pts = torch.cat([grid, mids, torch.nextafter(mids, torch.tensor(0.0)), torch.nextafter(mids, torch.tensor(1e3)),
                     torch.rand(100000, generator=g) * 448, torch.rand(10000, generator=g) * 0.02])
    pts = torch.cat([pts, -pts])
    want = pts.to(torch.float8_e4m3fn).to(torch.float32)
    assert torch.equal(round_to_grid(pts, "e4m3"), want), "e4m3 rounding != torch float8_e4m3fn"
    # e2m1: against make_fixtures' independent code picker.
    lut = torch.tensor(mf.E2M1_VALUES, dtype=torch.float32)
    g2 = GRIDS["e2m1"].to(torch.float32)
    m2 = (g2[1:] + g2[:-1]) / 2
    pts = torch.cat([g2, m2, torch.nextafter(m2, torch.tensor(0.0)), torch.nextafter(m2, torch.tensor(9.0)),
                     torch.rand(100000, generator=g) * 6])
    pts = torch.cat([pts, -pts])
    assert torch.equal(round_to_grid(pts, "e2m1"), lut[mf.e2m1_codes(pts).long()]), "e2m1 rounding"
    # Scales: powers of two with amax / s in (qmax/2, qmax] (amax above the floor).
    x = torch.randn(64, 512, generator=g) * torch.exp2(torch.randint(-20, 10, (64, 1), generator=g).float())
    for qmax, inv, blk in ((448.0, F32_INV_448, 64), (6.0, F32_INV_6, 32)):
        amax = x.reshape(64, -1, blk).abs().amax(-1)
        s = torch.exp2(ue8m0_exponent(amax, inv).double())
        r = amax.double() / s
        assert bool(((r > qmax / 2 * (1 - 1e-6)) & (r <= qmax * (1 + 1e-6))).all()), qmax
    # Hadamard: orthonormal (close to the explicit Sylvester matrix product), involutive.
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < 128:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    v = torch.randn(32, 128, generator=g)
    want = (v.double() @ H.T) / math.sqrt(128)
    assert float((hadamard(v).double() - want).abs().max()) < 1e-5
    assert float((hadamard(hadamard(v)) - v).abs().max()) < 1e-5
    # A KV row: nope dims on the FP8 grid of their block scale, rope dims bf16.
    row = torch.randn(3, 512, generator=g)
    r = round_kv_rows(row, 64)
    assert torch.equal(r[:, 448:], row[:, 448:].to(torch.bfloat16).float())
    assert float(((r[:, :448] - row[:, :448]).abs() / row[:, :448].reshape(3, 7, 64).abs().amax(-1)
                  .repeat_interleave(64, 1)).max()) <= 2.0**-4


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def row_rel(a: torch.Tensor, ref: torch.Tensor):
    """Per position max|a - ref| / max|ref|, and the worst over all positions relative to the
    global max|ref| (the forward-pass test's measure)."""
    d = (a - ref).abs().amax(-1).double()
    r = ref.abs().amax(-1).double()
    return d / r, float(d.max() / r.max())


def make_official(fixture_dir: Path, out_path: Path, command: str, decode: bool = True) -> dict:
    t0 = time.time()
    name = fixture_dir.name
    cfg = json.loads((fixture_dir / "config.json").read_text())
    spec = mf.FIXTURES[name]
    table = mf.official_tensor_table(cfg, spec)
    stored = mf.load_checkpoint(fixture_dir)
    model = mf.build_model(cfg, mf.official_to_hf(mf.dequantize_official_torch(table, stored), cfg))
    with safe_open(str(fixture_dir / "reference.safetensors"), framework="pt") as fh:
        f32_ref = {k: fh.get_tensor(k) for k in ("tokens", "logits", "greedy.prompt", "greedy.tokens")}
    tokens = f32_ref["tokens"].to(torch.int64)
    S = tokens.numel()

    # Same weights and tokens as reference.safetensors: the unpatched model reproduces its logits.
    with torch.no_grad():
        plain = model(tokens[None], use_cache=False).logits[0]
    same = float((plain - f32_ref["logits"]).abs().max())
    assert same == 0.0, f"{name}: unpatched logits differ from reference.safetensors by {same}"
    print(f"[{name}] unpatched model reproduces reference.safetensors logits exactly "
          f"({time.time() - t0:.1f}s)", flush=True)

    counters = {"kv_rows": 0, "indexer_calls": 0}
    rec = mf.Recorder(model, cfg)
    with official_numerics(cfg["qk_rope_head_dim"], counters):
        logits, ref, stats = mf.run_prefill_recorded(model, rec, cfg, tokens, [])
        n_csa = sum(1 for r in cfg["compress_ratios"] if r == 4)
        assert counters["indexer_calls"] == n_csa, counters  # the patch was really used
        assert counters["kv_rows"] > 0, counters
        print(f"[{name}] official-numerics prefill done ({time.time() - t0:.1f}s)", flush=True)
        prompt = f32_ref["greedy.prompt"].to(torch.int64)
        n_new = f32_ref["greedy.tokens"].numel()
        g_tokens, g_logits, g_margin = mf.greedy(model, prompt, n_new)
        dec = mf.decode_check(model, cfg, tokens, logits, spec.decode_split) if decode else None
    for h in rec.handles:
        h.remove()

    margins = {k: v for k, v in ref.items() if k.endswith(".margin")}
    mmin = torch.stack(list(margins.values())).amin(0) if margins else torch.full((S,), math.inf)
    rel_rows, rel_worst = row_rel(logits, f32_ref["logits"])
    argmax_same = int((logits.argmax(-1) == f32_ref["logits"].argmax(-1)).sum())
    g_prefix = 0
    for a, b in zip(g_tokens.tolist(), f32_ref["greedy.tokens"].tolist()):
        if a != b:
            break
        g_prefix += 1
    stats.update({
        "logits_max_abs": float(logits.abs().max()),
        "vs_f32_reference_worst_rel": rel_worst,
        "vs_f32_reference_mean_row_rel": float(rel_rows.mean()),
        "vs_f32_reference_argmax_agree": argmax_same,
        "vs_f32_reference_greedy_equal_prefix": g_prefix,
        "min_selection_margin": float(mmin.min()),
        "positions_with_margin_below_1e-5": int((mmin < 1e-5).sum()),
        "positions_with_margin_below_1e-4": int((mmin < 1e-4).sum()),
        "greedy_min_margin": float(g_margin.min()),
        "kv_rows_rounded": counters["kv_rows"],
    })
    if dec is not None:
        stats["decode_vs_prefill_max_abs"] = float(dec.max())
        stats["decode_vs_prefill_over_1e-4"] = [(int(p), float(dec[p]), float(mmin[p]))
                                                for p in (dec > 1e-4).nonzero().flatten()][:20]
    for k, v in sorted(margins.items()):
        print(f"[{name}] {k}: min {float(v.min()):.3g}, positions < 1e-5: {int((v < 1e-5).sum())}, "
              f"< 1e-4: {int((v < 1e-4).sum())}", flush=True)
    print(f"[{name}] official vs f32 reference (transformers both): worst {rel_worst:.4g}, "
          f"mean row {float(rel_rows.mean()):.4g}, argmax agree {argmax_same}/{S}, greedy prefix "
          f"{g_prefix}/{n_new}, greedy min margin {float(g_margin.min()):.3g}", flush=True)
    if dec is not None:
        print(f"[{name}] patched transformers cache decode vs prefill max|diff| {float(dec.max()):.3g} "
              f"({time.time() - t0:.1f}s)", flush=True)

    tensors = {
        "tokens": tokens.to(torch.int32),
        "logits": logits.to(torch.float32).contiguous(),
        "margin.min": mmin.to(torch.float32).contiguous(),
        "greedy.prompt": prompt.to(torch.int32),
        "greedy.tokens": g_tokens,
        "greedy.logits": g_logits.to(torch.float32).contiguous(),
        "greedy.margin": g_margin.to(torch.float32),
    }
    if dec is not None:
        tensors["decode.max_abs_diff"] = dec.to(torch.float32).contiguous()
    for k, v in margins.items():
        tensors[k] = v.to(torch.float32).contiguous()
    for i in range(cfg["num_hidden_layers"]):
        for s in ("sum", "sumsq"):
            tensors[f"layers.{i}.out.{s}"] = ref[f"layers.{i}.out.{s}"].contiguous()
    files = sorted(p.name for p in fixture_dir.iterdir() if p.name.startswith("model"))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **mf.versions(),
        "config": name,
        "command": command,
        "dtype": "float32",
        "attn_implementation": "eager",
        "numerics": ("kv rows: fp8 e4m3 blocks of 64 (ue8m0) + bf16 rope dims; attention q: bf16; "
                     "indexer q and keys: hadamard, fp4 e2m1 blocks of 32 (ue8m0); rest f32"),
        "source_sha256": json.dumps({f: sha256_of(fixture_dir / f) for f in files + ["reference.safetensors"]},
                                    sort_keys=True),
        "stats": json.dumps(mf.strict_json(stats), sort_keys=True, allow_nan=False),
    }
    mf.save_safetensors(tensors, out_path, meta)
    print(f"[{name}] wrote {out_path} ({out_path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f}s",
          flush=True)
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=mf.DEFAULT_OUT, help="fixture root (default tests/data/fixtures)")
    ap.add_argument("--config", action="append", choices=FIXTURE_NAMES, help="only these fixtures (repeatable)")
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir and require identical bytes")
    ap.add_argument("--no-decode", action="store_true", help="skip the teacher-forced cache decode check")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps files bit-identical)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    self_test()
    names = args.config or list(FIXTURE_NAMES)
    ok = True
    for n in names:
        command = "python tools/reference/make_official_reference.py --config " + n
        if args.no_decode:
            command += " --no-decode"
        if args.threads != 1:
            command += f" --threads {args.threads}"
        target = args.fixtures / n / "reference_official.safetensors"
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / target.name
                with safe_open(str(target), framework="pt") as fh:
                    meta = fh.metadata()
                make_official(args.fixtures / n, out, meta.get("command", command),
                              decode="--no-decode" not in meta.get("command", ""))
                same = out.read_bytes() == target.read_bytes()
            print(f"[check {n}] {'OK: identical bytes' if same else 'FAIL: bytes differ'}", flush=True)
            ok = ok and same
        else:
            make_official(args.fixtures / n, target, command, decode=not args.no_decode)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
