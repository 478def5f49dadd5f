"""quicraw.py - hand-built QUIC v1 Initial packets for the attack tests.

Real clients only send well-formed Initials from their own address; the
attack tests need Initials with odd connection-ID lengths, floods of them
from many loopback source addresses (127.0.0.0/8 is all local), and
garbage. This module builds a client Initial that starts a real TLS 1.3
handshake (a ClientHello with an X25519 key share, ALPN h3 and QUIC
transport parameters), protected as RFC 9001 §5 says, and reads what the
server answers: Version Negotiation, Retry (with its token, so the next
Initial can carry it) and the server's Initial (decrypted: a CRYPTO frame
means the handshake went on, a CONNECTION_CLOSE carries its error code).

Needs Debian's python3-cryptography (AES-GCM, AES-ECB, X25519, HKDF's HMAC).
"""

import hashlib
import hmac
import os
import socket
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization

QUIC_V1 = 0x00000001
INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")

# transport error codes (RFC 9000 §20.1)
CONNECTION_REFUSED = 0x02
INVALID_TOKEN = 0x0B


# -- varints and HKDF ---------------------------------------------------------


def varint(v):
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return struct.pack(">H", 0x4000 | v)
    if v < 0x40000000:
        return struct.pack(">I", 0x80000000 | v)
    return struct.pack(">Q", 0xC000000000000000 | v)


def read_varint(b, i):
    """(value, next index) of the varint at b[i]."""
    first = b[i]
    n = 1 << (first >> 6)
    v = first & 0x3F
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand_label(secret, label, length):
    full = b"tls13 " + label
    info = struct.pack(">H", length) + bytes([len(full)]) + full + b"\x00"
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


class Keys:
    """Initial keys of one direction (RFC 9001 §5.2)."""

    def __init__(self, dcid, server):
        initial = hkdf_extract(INITIAL_SALT_V1, dcid)
        secret = hkdf_expand_label(initial, b"server in" if server else b"client in", 32)
        self.key = hkdf_expand_label(secret, b"quic key", 16)
        self.iv = hkdf_expand_label(secret, b"quic iv", 12)
        self.hp = hkdf_expand_label(secret, b"quic hp", 16)

    def mask(self, sample):
        enc = Cipher(algorithms.AES(self.hp), modes.ECB()).encryptor()
        return enc.update(sample) + enc.finalize()

    def nonce(self, pn):
        return bytes(a ^ b for a, b in zip(self.iv, pn.to_bytes(12, "big")))


# -- the ClientHello ------------------------------------------------------------


def _ext(t, body):
    return struct.pack(">HH", t, len(body)) + body


def tparam(pid, value):
    """One transport parameter (RFC 9000 §18): id, length, value."""
    return varint(pid) + varint(len(value)) + value


def default_tparams(scid):
    """The transport parameters a plain client sends, as [(id, value)]."""
    return [(0x0F, scid),                  # initial_source_connection_id
            (0x04, varint(1 << 20)),       # initial_max_data
            (0x05, varint(1 << 18)),       # initial_max_stream_data_bidi_local
            (0x08, varint(10)),            # initial_max_streams_bidi
            (0x01, varint(30000))]         # max_idle_timeout (ms)


def client_hello(scid, sni="localhost", alpn=b"h3", tparams=None):
    """A TLS 1.3 ClientHello that GnuTLS accepts in a QUIC handshake.
    |tparams|: [(id, value)] sent as the quic_transport_parameters
    extension instead of default_tparams(scid), in that order (duplicates
    too; a bytes item goes in as it is); False leaves the extension out."""
    pub = X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = sni.encode()
    if tparams is None:
        tparams = default_tparams(scid)
    tp = (b"".join(p if isinstance(p, bytes) else tparam(*p) for p in tparams)
          if tparams is not False else None)
    exts = (_ext(0, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
            + _ext(10, struct.pack(">HH", 2, 0x001D))
            + _ext(13, struct.pack(">HHHHH", 8, 0x0403, 0x0804, 0x0805, 0x0401))
            + _ext(16, struct.pack(">HB", len(alpn) + 1, len(alpn)) + alpn)
            + _ext(43, b"\x02\x03\x04")
            + _ext(45, b"\x01\x01")
            + _ext(51, struct.pack(">HHH", 36, 0x001D, 32) + pub)
            + (_ext(0x39, tp) if tp is not None else b""))
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack(">HHH", 4, 0x1301, 0x1303)
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    return b"\x01" + len(body).to_bytes(3, "big") + body


# -- packets ------------------------------------------------------------------------


def initial(dcid, scid, token=b"", payload=None, pn=0, size=1200, key_dcid=None, **hello):
    """A protected client Initial of at least |size| bytes carrying
    |payload| (default: a CRYPTO frame with a fresh ClientHello, made with
    the keywords |hello| of client_hello). Its keys come from |key_dcid|
    (default |dcid|): once the server answered, the client writes to the
    server's CID with the keys of the DCID it started with."""
    if payload is None:
        ch = client_hello(scid, **hello)
        payload = b"\x06" + varint(0) + varint(len(ch)) + ch
    keys = Keys(key_dcid if key_dcid is not None else dcid, server=False)
    pn_len = 4
    head = (bytes([0xC0 | (pn_len - 1)]) + struct.pack(">I", QUIC_V1) + bytes([len(dcid)]) + dcid
            + bytes([len(scid)]) + scid + varint(len(token)) + token)
    # pad the payload so the datagram reaches |size| (PADDING frames are 0)
    fixed = len(head) + 2 + pn_len + 16
    if fixed + len(payload) < size:
        payload += b"\x00" * (size - fixed - len(payload))
    length = pn_len + len(payload) + 16
    head += struct.pack(">H", 0x4000 | length)
    pn_off = len(head)
    header = head + pn.to_bytes(pn_len, "big")
    ct = AESGCM(keys.key).encrypt(keys.nonce(pn), payload, header)
    sample = ct[4 - pn_len:4 - pn_len + 16]
    m = keys.mask(sample)
    first = bytes([header[0] ^ (m[0] & 0x0F)])
    pnb = bytes(a ^ b for a, b in zip(header[pn_off:], m[1:1 + pn_len]))
    return first + header[1:pn_off] + pnb + ct


def garbage_initial(dcid, scid=b"\x01" * 8, size=1200):
    """An Initial header that parses, followed by bytes that do not decrypt."""
    head = (b"\xc3" + struct.pack(">I", QUIC_V1) + bytes([len(dcid)]) + dcid + bytes([len(scid)])
            + scid + b"\x00")
    body = os.urandom(max(24, size - len(head) - 2))
    return head + struct.pack(">H", 0x4000 | len(body)) + body


# Retry integrity (RFC 9001 §5.8): the fixed key and nonce of QUIC v1
RETRY_KEY_V1 = bytes.fromhex("be0c690b9f66575a1d766b54e368c84e")
RETRY_NONCE_V1 = bytes.fromhex("461599d35d632bf2239825bb")


def retry_tag_ok(data, odcid):
    """Whether the Retry packet |data| ends with the integrity tag that the
    client whose first Initial went to |odcid| expects."""
    pseudo = bytes([len(odcid)]) + odcid + data[:-16]
    return AESGCM(RETRY_KEY_V1).encrypt(RETRY_NONCE_V1, b"", pseudo) == data[-16:]


class Answer:
    """What one datagram from the server says."""

    def __init__(self, data):
        self.data = data
        self.kind = "unknown"
        self.scid = b""
        self.dcid = b""
        self.token = b""
        self.frames = b""
        self.close_code = None
        self.close_kind = None  # 0x1c (transport) or 0x1d (application)
        self.close_frame_type = None  # of a 0x1c: the frame that caused it
        if not data:
            self.kind = "empty"
            return
        if not data[0] & 0x80:
            self.kind = "short"  # a stateless reset looks like one
            return
        ver = struct.unpack(">I", data[1:5])[0]
        i = 5
        dl = data[i]
        self.dcid = data[i + 1:i + 1 + dl]
        i += 1 + dl
        sl = data[i]
        self.scid = data[i + 1:i + 1 + sl]
        i += 1 + sl
        if ver == 0:
            self.kind = "vn"
            return
        ptype = (data[0] >> 4) & 3
        if ptype == 3:
            self.kind = "retry"
            self.token = data[i:-16]
            return
        if ptype == 0:
            self.kind = "initial"
            self._i = i
        else:
            self.kind = "other"

    def decrypt(self, client_dcid):
        """Decrypts the server Initial with the keys of the DCID the client
        used; sets .frames and .close_code (CONNECTION_CLOSE's error)."""
        if self.kind != "initial":
            return
        d = self.data
        tl, i = read_varint(d, self._i)
        i += tl
        length, i = read_varint(d, i)
        pn_off = i
        keys = Keys(client_dcid, server=True)
        m = keys.mask(d[pn_off + 4:pn_off + 20])
        first = d[0] ^ (m[0] & 0x0F)
        pn_len = (first & 3) + 1
        pnb = bytes(a ^ b for a, b in zip(d[pn_off:pn_off + pn_len], m[1:1 + pn_len]))
        header = bytes([first]) + d[1:pn_off] + pnb
        ct = d[pn_off + pn_len:pn_off + length]
        try:
            self.frames = AESGCM(keys.key).decrypt(keys.nonce(int.from_bytes(pnb, "big")), ct,
                                                   header)
        except Exception:  # noqa: BLE001 - not ours to read
            self.frames = b""
            return
        f = self.frames
        j = 0
        while j < len(f):
            t = f[j]
            if t in (0x1C, 0x1D):
                self.close_kind = t
                self.close_code, k = read_varint(f, j + 1)
                if t == 0x1C:
                    self.close_frame_type, _ = read_varint(f, k)
                return
            if t in (0x00, 0x01):
                j += 1
            elif t in (0x02, 0x03):  # ACK
                j += 1
                _, j = read_varint(f, j)
                _, j = read_varint(f, j)
                n, j = read_varint(f, j)
                _, j = read_varint(f, j)
                for _ in range(n):
                    _, j = read_varint(f, j)
                    _, j = read_varint(f, j)
                if t == 0x03:
                    for _ in range(3):
                        _, j = read_varint(f, j)
            elif t == 0x06:  # CRYPTO
                j += 1
                _, j = read_varint(f, j)
                n, j = read_varint(f, j)
                j += n
            else:
                return

    def has_crypto(self):
        return b"\x06" in self.frames[:64] and self.close_code is None


def udp_socket(src="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    return s


def answers(sock, timeout):
    """Every datagram that arrives on |sock| within |timeout| seconds."""
    out = []
    sock.settimeout(timeout)
    try:
        while True:
            data, _ = sock.recvfrom(65536)
            out.append(Answer(data))
            sock.settimeout(0.05)
    except socket.timeout:
        pass
    return out


def handshake_start(port, src="127.0.0.1", dcid=None, token=b"", timeout=2.0, sock=None,
                    scid=None, **hello):
    """Sends one ClientHello Initial from |src| (made with the keywords
    |hello| of client_hello) and returns (socket, dcid, [Answer]) with the
    server's Initials decrypted. The socket stays open
    (the caller closes it) so the server's retransmissions have a place to
    go."""
    s = sock or udp_socket(src)
    dcid = dcid if dcid is not None else os.urandom(8)
    scid = scid if scid is not None else os.urandom(8)
    s.sendto(initial(dcid, scid, token=token, **hello), ("127.0.0.1", port))
    got = answers(s, timeout)
    for a in got:
        a.decrypt(dcid)
    return s, dcid, got
