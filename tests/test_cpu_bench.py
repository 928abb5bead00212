"""tools.bench.cpu runs the encrypted protocol cores and stack (it checks both ends
authenticated with encrypted records before measuring) and ChaCha20-Poly1305 on the
same amount of data."""

from __future__ import annotations

from tools.bench.cpu import MB, measure


def test_the_cpu_benchmark_measures_the_encrypted_stack_and_the_cipher() -> None:
    result = measure(size=MB // 8)
    assert min(result.cores, result.stack, result.simulated, result.radio, result.aead) > 0
    assert result.ratio == result.stack / result.aead
    assert result.core_share == result.stack * result.capacity / MB
