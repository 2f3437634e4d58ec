#!/usr/bin/python3
"""Regenerate frame/testdata/golden from Debian's xpra 3.1.3 Python code.

Run with the system interpreter, which owns xpra's modules:
    apt-get install xpra python3-lz4 python3-rencode python3-brotli
    /usr/bin/python3 frame/testdata/gen_fixtures.py frame/testdata/golden

Every file is produced by xpra's own code paths: python-rencode's dumps
(what xpra 3.1 uses), xpra.net.bencode, xpra.net.compression's compressors
and xpra.net.protocol.Protocol.encode with xpra.net.header.pack_header for
whole packets. The Go tests (golden_test.go) hold the same values as Go
literals, keyed by file name. rencodeplus is absent from xpra 3.1.3; its
fixtures are written by hand in the Go tests from ../shared/xpra-spec.md.
"""
import os
import sys

from xpra.net import packet_encoding, compression
from xpra.net.bencode import bencode
from xpra.net.compression import Compressed, LevelCompressed
from xpra.net.header import pack_header
from xpra.net.protocol import Protocol
import rencode

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "golden")


def write(rel, data):
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def pattern(n, seed=1):
    """Deterministic, somewhat compressible bytes (mirrored in Go)."""
    b = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        b[i] = (x >> 16) & 0x0F if i % 3 else (i & 0xFF)
    return bytes(b)


HELLO = {
    "version": "3.1.3",
    "username": "foo",
    "uuid": "0123456789abcdef0123456789abcdef01234567",
    "compression_level": 1,
    "rencode": True,
    "bencode": True,
    "encoders": ["rencode", "bencode", "yaml"],
    "compressors": ["zlib", "lz4", "lzo", "brotli"],
    "lz4.version": [1, 9, 4],
    "digest": ["hmac", "hmac+sha512", "hmac+sha256", "xor"],
    "salt-digest": ["hmac+sha512", "hmac+sha256"],
    "challenge": True,
    "desktop_size": [1600, 1200],
    "screen_sizes": [[":50", 1600, 1200, 423, 317, [["0", 0, 0, 1600, 1200, 423, 317]], 0, 0, 1600, 1200]],
    "encoding.min-quality": 30,
    "windows": {1: "xterm", 2: "xclock"},
    "aliases": {"hello": 1, "ping": 13, "draw": 35},
}

# name -> value, for both rencode and bencode (no floats, no None).
COMMON = {
    "int_0": 0, "int_43": 43, "int_44": 44, "int_m1": -1, "int_m32": -32, "int_m33": -33,
    "int_127": 127, "int_128": 128, "int_m128": -128, "int_m129": -129,
    "int_32767": 32767, "int_32768": 32768, "int_2p31m1": 2**31 - 1, "int_2p31": 2**31,
    "int_m2p31m1": -2**31 - 1, "int_2p63m1": 2**63 - 1, "int_m2p63": -2**63,
    "true": True, "false": False,
    "str_empty": "", "str_hello": "hello", "str_63": "x" * 63, "str_64": "y" * 64,
    "str_1000": "z" * 1000, "str_utf8": "h\u00e9llo \u2603",
    "bytes_80": b"\x00\xff" * 40,
    "list_empty": [], "list_123": [1, 2, 3], "list_63": list(range(63)), "list_64": list(range(64)),
    "list_nested": [[1, [2, [3, []]]], "a", b"b"],
    "dict_empty": {}, "dict_one": {"a": 1}, "dict_24": {"k%02d" % i: i for i in range(24)},
    "dict_25": {"k%02d" % i: i for i in range(25)}, "dict_intkeys": {1: "a", 2: "b", -7: "c"},
    "hello": HELLO,
}
RENCODE_ONLY = {
    "int_2p63": 2**63, "int_m2p63m1": -2**63 - 1, "int_1e30": 10**30,
    "none": None, "float_1_5": 1.5, "float_m0_25": -0.25, "float_0_1": 0.1,
    "list_mixed": [None, 1.5, True, "s", -5, {"x": None}],
}
BENCODE_ONLY = {"int_2p63": 2**63, "int_1e30": 10**30}


def gen_values():
    for name, v in list(COMMON.items()) + list(RENCODE_ONLY.items()):
        write("rencode/%s.bin" % name, rencode.dumps(v))
    for name, v in list(COMMON.items()) + list(BENCODE_ONLY.items()):
        write("bencode/%s.bin" % name, bencode(v))


def gen_compression():
    inputs = {"text": (b"the quick brown fox jumps over the lazy dog. " * 200), "pattern": pattern(70000)}
    for name, data in inputs.items():
        write("compress/%s.raw" % name, data)
        for algo in ("lz4", "zlib", "brotli"):
            for level in (1, 3, 5, 7, 9):
                flag, cdata = compression.get_compressor(algo)(data, level)
                write("compress/%s.%s%d.%02x.bin" % (name, algo, level, flag), cdata)


def protocol(encoder, compressor, level):
    """A Protocol object with just what Protocol.encode needs."""
    p = Protocol.__new__(Protocol)
    p.compression_level = level
    p._compress = compression.get_compressor(compressor)
    p._encoder = packet_encoding.get_encoder(encoder)
    p.output_stats = {}
    p.send_aliases = {}
    p.large_packets = [b"hello"]
    p._closed = False
    return p


def frames(p, packet):
    b = b""
    for proto_flags, index, level, data in p.encode(packet):
        b += pack_header(proto_flags, level, index, len(data)) + data
    return b


def gen_packets():
    packet_encoding.init()
    pixels = pattern(60000, seed=7)
    small = pattern(1000, seed=3)
    flag, cpixels = compression.get_compressor("lz4")(pixels, 1)
    packets = {
        "ping": ["ping", 123456789, 1700000000000, "0123456789abcdef"],
        "hello": ["hello", HELLO],
        "draw_rgb": ["draw", 1, 0, 0, 200, 75, "rgb24", Compressed("rgb24", pixels), 7, 800, {"lz4": 1, "rgb_format": "BGRX"}],
        "draw_inline": ["draw", 1, 0, 0, 10, 25, "rgb24", Compressed("rgb24", small, can_inline=True), 8, 40, {}],
        "draw_levelcompressed": ["draw", 2, 5, 5, 200, 75, "rgb24", LevelCompressed("rgb24", cpixels, flag, "lz4", False), 9, 800, {}],
        "clipboard_large": ["clipboard-contents", 4, "CLIPBOARD", "UTF8_STRING", 8, "bytes", pattern(9000, seed=5)],
        "disconnect": ["disconnect", "authentication failed", "password incorrect"],
    }
    for encoder in ("rencode", "bencode"):
        for compressor, level in (("lz4", 1), ("lz4", 3), ("zlib", 1), ("none", 0)):
            p = protocol(encoder, compressor, level)
            for name, packet in packets.items():
                write("packets/%s.%s.%s%d.bin" % (name, encoder, compressor, level), frames(p, packet))


gen_values()
gen_compression()
gen_packets()
