"""The embedder's dtype choice: bfloat16 only where the CPU computes it natively, float32 elsewhere."""

from __future__ import annotations

import pytest

import indexing.embed as embed


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma"}, "float32"),  # AVX2 only: bfloat16 is emulated and slower than float32
        ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
        ({"avx2", "amx_bf16", "amx_tile"}, "bfloat16"),
    ],
)
def test_bfloat16_falls_back_to_float32_without_native_support(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str
) -> None:
    monkeypatch.setattr(embed, "_cpu_flags", lambda: flags)
    assert embed.native_bf16() is (expected == "bfloat16")
    assert embed.effective_dtype("bfloat16") == expected
    assert embed.effective_dtype("float32") == "float32"
    assert embed.effective_dtype("int8") == "int8"
    assert embed.effective_dtype("bfloat16", device="cuda") == "bfloat16"  # only CPUs fall back


def test_cpu_flags_are_read_from_proc_cpuinfo() -> None:
    flags = embed._cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this system")
    assert flags  # a non-empty set of feature names
