#!/usr/bin/env python3
"""Regenerates reference_small.safetensors with the reference `safetensors` writer.

Run: /work/refvenv/bin/python tests/data/safetensors/gen_reference.py
(torch 2.15, safetensors 0.8.0). tests/formats/safetensors_test.cpp checks the values below
byte for byte, so the C++ reader is tested against files it did not write.
"""
import pathlib

import torch
from safetensors.torch import save_file

out = pathlib.Path(__file__).with_name("reference_small.safetensors")
tensors = {
    # [2, 3] f32 0..5
    "model.a.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    # bf16 1.0, -2.0, 0.5 -> 0x3f80, 0xc000, 0x3f00
    "model.b.bf16": torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16),
    # e4m3fn 1.0, -0.5, 448, 0 -> 0x38, 0xb0, 0x7e, 0x00
    "layers.0.attn.wq_a.weight": torch.tensor([[1.0, -0.5], [448.0, 0.0]]).to(torch.float8_e4m3fn),
    # ue8m0 1.0, 0.5 -> 0x7f, 0x7e
    "layers.0.attn.wq_a.scale": torch.tensor([[1.0], [0.5]]).to(torch.float8_e8m0fnu),
    # V4-style FP4 expert: two e2m1 codes per int8 byte, storage shape [2, 2]
    "layers.0.ffn.experts.0.w1.weight": torch.tensor([[0x21, -1], [0, 0x7F]], dtype=torch.int8),
    # the same bytes as torch.float4_e2m1fn_x2: written as "F4" with the logical shape [2, 4]
    "model.f.f4": torch.tensor([[0x21, 0xFF], [0, 0x7F]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
    # i64 -1, 2^40
    "model.c.i64": torch.tensor([-1, 2**40], dtype=torch.int64),
    # a scalar and an empty tensor
    "model.d.scalar": torch.tensor(3.0, dtype=torch.float16),
    "model.e.empty": torch.zeros((0, 4), dtype=torch.float32),
}
save_file(tensors, str(out), metadata={"format": "pt"})
print(out, out.stat().st_size, "bytes")
