#!/usr/bin/python3
# Encrypts and decrypts frames with Debian's xpra 3.1.3 crypto code, as its
# Protocol does (_add_chunks_to_queue / _read_parse_thread_loop): one CBC
# stream per direction, padding to xpra's 32-byte block. Used by
# cipher_test.go. argv: key salt-hex iv iterations padding; stdin: hex
# frames to decrypt, one a line; stdout: decrypted payloads then, after
# a "--" line, frames xpra encrypted from the payloads given as argv[6:].
import sys, binascii
from xpra.net.crypto import crypto_backend_init, get_encryptor, get_decryptor, pad
from xpra.net.header import pack_header, unpack_header, FLAGS_CIPHER

crypto_backend_init()
key, salt, iv, iterations, padding = sys.argv[1], binascii.unhexlify(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
dec, block = get_decryptor("AES", iv, key, salt, iterations)
for line in sys.stdin:
    data = binascii.unhexlify(line.strip())
    _, flags, level, index, size = unpack_header(data[:8])
    assert flags & FLAGS_CIPHER
    padsize = block - (size % block)
    plain = dec.decrypt(data[8:8 + size + padsize])
    assert plain.endswith(pad(padding, padsize)), "padding error"
    print(binascii.hexlify(plain[:-padsize]).decode())
print("--")
enc, block = get_encryptor("AES", iv, key, salt, iterations)
for p in sys.argv[6:]:
    data = binascii.unhexlify(p)
    padsize = block - (len(data) % block)
    out = enc.encrypt(data + pad(padding, padsize))
    print(binascii.hexlify(pack_header(FLAGS_CIPHER, 0, 0, len(data)) + out).decode())
