"""The two C kernels: XOR masking (``_mask.h``) and incremental UTF-8 validation
(``_utf8.h``), against plain references."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from frame_builder import xor

from harpia._frames import apply_mask, unmask_inplace, utf8_valid

KEYS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x04\x08", b"\x37\xfa\x21\x3d"]
MIB = 1 << 20


# --------------------------------------------------------------------------- masking

@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_apply_mask_every_length_to_300(phase: int) -> None:
    rnd = random.Random(phase)
    for n in range(301):
        data = rnd.randbytes(n)
        key = rnd.randbytes(4)
        assert apply_mask(data, key, phase) == xor(data, key, phase), n


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_unmask_inplace_every_length_to_300(phase: int) -> None:
    rnd = random.Random(100 + phase)
    for n in range(301):
        data = rnd.randbytes(n)
        key = rnd.randbytes(4)
        buf = bytearray(data)
        unmask_inplace(buf, key, phase)
        assert bytes(buf) == xor(data, key, phase), n


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_one_mib(phase: int) -> None:
    data = random.Random(phase).randbytes(MIB)
    key = KEYS[3]
    expected = xor(data, key, phase)
    assert apply_mask(data, key, phase) == expected
    buf = bytearray(data)
    unmask_inplace(buf, key, phase)
    assert buf == expected


@pytest.mark.parametrize("offset", range(1, 8))
@pytest.mark.parametrize("n", [0, 1, 7, 15, 16, 17, 31, 33, 255, 256, 257, 300, 1000, MIB - 3])
def test_unaligned_starts(offset: int, n: int) -> None:
    rnd = random.Random(offset * 1000 + n)
    backing = bytearray(rnd.randbytes(n + 16))
    original = bytes(backing)
    key = rnd.randbytes(4)
    phase = offset & 3
    view = memoryview(backing)[offset:offset + n]
    assert apply_mask(view, key, phase) == xor(original[offset:offset + n], key, phase)
    unmask_inplace(view, key, phase)
    assert backing[offset:offset + n] == xor(original[offset:offset + n], key, phase)
    # Not one byte outside the slice is touched.
    assert backing[:offset] == original[:offset]
    assert backing[offset + n:] == original[offset + n:]


@given(data=st.binary(max_size=3000), key=st.binary(min_size=4, max_size=4),
       phase=st.integers(-8, 8), cut=st.integers(0, 3000))
@settings(max_examples=200, deadline=None)
def test_mask_properties(data: bytes, key: bytes, phase: int, cut: int) -> None:
    masked = apply_mask(data, key, phase)
    assert masked == xor(data, key, phase % 4)
    assert apply_mask(masked, key, phase) == data                 # an involution
    # Masking in two pieces, the second with the phase advanced, is masking in one.
    cut = min(cut, len(data))
    assert apply_mask(data[:cut], key, phase) + apply_mask(data[cut:], key, phase + cut) == masked


def test_mask_accepts_bytes_like_keys_and_data() -> None:
    assert apply_mask(bytearray(b"abcd"), memoryview(b"\x01\x01\x01\x01")) == b"`cbe"
    assert apply_mask(b"", b"abcd") == b""
    assert isinstance(apply_mask(bytearray(b"x" * 40), b"abcd"), bytes)
    empty = bytearray()
    unmask_inplace(empty, b"abcd")
    assert empty == b""


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_mask_key_must_be_4_bytes(key: bytes) -> None:
    with pytest.raises(ValueError):
        apply_mask(b"data", key)
    with pytest.raises(ValueError):
        unmask_inplace(bytearray(b"data"), key)


def test_unmask_inplace_needs_a_writable_buffer() -> None:
    with pytest.raises((TypeError, ValueError, BufferError)):
        unmask_inplace(b"read-only", b"abcd")


# --------------------------------------------------------------------------- UTF-8

def python_valid(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# Autobahn|Testsuite section 6 style cases: (bytes, valid).
AUTOBAHN_UTF8 = [
    (b"", True),
    (b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", True),
    ("κόσμε".encode(), True),
    # Boundaries of each sequence length.
    (b"\x00", True), (b"\xc2\x80", True), (b"\xe0\xa0\x80", True), (b"\xf0\x90\x80\x80", True),
    (b"\x7f", True), (b"\xdf\xbf", True), (b"\xef\xbf\xbf", True), (b"\xf4\x8f\xbf\xbf", True),
    (b"\xed\x9f\xbf", True), (b"\xee\x80\x80", True), (b"\xef\xbf\xbd", True),
    # Noncharacters are valid UTF-8.
    (b"\xef\xbf\xbe", True), (b"\xf0\x9f\xbf\xbf", True), (b"\xf4\x8f\xbf\xbe", True),
    # Above U+10FFFF, and 5- and 6-byte forms.
    (b"\xf4\x90\x80\x80", False), (b"\xf7\xbf\xbf\xbf", False), (b"\xf8\x88\x80\x80\x80", False),
    (b"\xfc\x84\x80\x80\x80\x80", False),
    # Lone and unexpected continuation bytes.
    (b"\x80", False), (b"\xbf", False), (b"\x80\xbf", False), (b"a\x80b", False),
    (b"\xc2\x80\x80", False),
    # Lonely start bytes, sequences missing their last byte, concatenated.
    (b"\xc0 ", False), (b"\xe0 ", False), (b"\xf0 ", False), (b"\xc2", False), (b"\xe0\xa0", False),
    (b"\xf0\x90\x80", False), (b"\xdf", False), (b"\xef\xbf", False), (b"\xf4\x8f\xbf", False),
    (b"\xc2\xe0\xa0\xf0\x90\x80", False),
    # Impossible bytes.
    (b"\xfe", False), (b"\xff", False), (b"\xfe\xfe\xff\xff", False),
    # Overlong forms, including the maximal ones and NUL.
    (b"\xc0\xaf", False), (b"\xe0\x80\xaf", False), (b"\xf0\x80\x80\xaf", False),
    (b"\xc1\xbf", False), (b"\xe0\x9f\xbf", False), (b"\xf0\x8f\xbf\xbf", False),
    (b"\xc0\x80", False), (b"\xe0\x80\x80", False), (b"\xf0\x80\x80\x80", False),
    # UTF-16 surrogates, single and paired.
    (b"\xed\xa0\x80", False), (b"\xed\xad\xbf", False), (b"\xed\xae\x80", False),
    (b"\xed\xaf\xbf", False), (b"\xed\xb0\x80", False), (b"\xed\xbe\x80", False),
    (b"\xed\xbf\xbf", False), (b"\xed\xa0\x80\xed\xb0\x80", False),
    (b"\xed\xaf\xbf\xed\xbf\xbf", False),
    # U+10FFFF itself, and 4-byte starts.
    ("\U0010ffff".encode(), True), (b"\xf4\x80\x80\x80", True),
]


@pytest.mark.parametrize("data, valid", AUTOBAHN_UTF8, ids=[d.hex() or "empty" for d, _ in AUTOBAHN_UTF8])
def test_utf8_autobahn_cases(data: bytes, valid: bool) -> None:
    assert python_valid(data) is valid          # the table itself is right
    assert utf8_valid(data) is valid
    # After long runs of ASCII (the 8-bytes-at-a-time skip), at every alignment.
    for pad in range(0, 17):
        assert utf8_valid(b"a" * pad + data + b"z" * (17 - pad)) is valid


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_utf8_random_bytes(data: bytes) -> None:
    assert utf8_valid(data) is python_valid(data)


@given(text=st.text(max_size=200), pos=st.integers(0, 1000),
       bad=st.sampled_from([b"\xff", b"\x80", b"\xc0", b"\xed\xa0", b"\xf4\x90", b"\xe0\x80",
                            b"\xf5", b"\xc2", b"\xf0\x9f\x98"]),
       replace=st.booleans())
@settings(max_examples=400, deadline=None)
def test_utf8_valid_text_with_injected_corruption(text: str, pos: int, bad: bytes,
                                                  replace: bool) -> None:
    valid = text.encode("utf-8", "surrogatepass")
    assert utf8_valid(valid) is python_valid(valid)
    pos = min(pos, len(valid))
    corrupted = valid[:pos] + bad + valid[pos + (1 if replace else 0):]
    assert utf8_valid(corrupted) is python_valid(corrupted)


@given(st.lists(st.sampled_from(["a", "\x7f", "é", "\u07ff", "\u0800", "€", "\uffff",
                                 "\U00010000", "😀", "\U0010ffff"]), max_size=100))
@settings(max_examples=150, deadline=None)
def test_utf8_valid_strings(chars: list[str]) -> None:
    data = "".join(chars).encode()
    assert utf8_valid(data)
    if data:
        assert utf8_valid(data[:-1]) is python_valid(data[:-1])


def test_utf8_valid_accepts_bytes_like() -> None:
    assert utf8_valid(bytearray("é".encode()))
    assert utf8_valid(memoryview(b"ascii"))
    assert not utf8_valid(memoryview(b"\xc3"))


def test_utf8_long_inputs() -> None:
    big = ("a" * 1000 + "€𝄞") * 1000
    data = big.encode()
    assert utf8_valid(data)
    assert not utf8_valid(data + b"\xe2")
    assert not utf8_valid(data[:-1])
    assert not utf8_valid(data[:500_000] + b"\xff" + data[500_000:])
