"""The plain-Python mutator: byte-level edits, splices between seeds, and JSON-aware value swaps.

Used alone when atheris is not installed, and beside libFuzzer's own mutations when it is.
"""

from __future__ import annotations

import json
import random

_INTERESTING_INTS = (0, 1, -1, 2, 7, 8, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                     0xFFFFFFFF, 2**63 - 1, 2**63, 2**64 - 1)
_DEEP = "@@DEEP@@"
# Values a parser of JSON might not expect where a number, string, list or object belongs.
_JSON_VALUES: tuple[object, ...] = (
    None, True, False, 0, -1, 1.5, -0.0, 2**31, 2**63, -(2**63) - 1, 10**400, 1e308, float("inf"), float("nan"),
    "", "a" * 4096, "\udcff", "../outside.jpg", "\x00", [], {}, [None], [-1, -1, -1, -1], [1e308] * 4,
    {"": None}, _DEEP,
)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes], max_size: int = 1 << 16) -> bytes:
    """One mutated input derived from `data` (and sometimes another corpus entry)."""
    structured = _mutate_json(data, rng)
    if structured is not None and rng.random() < 0.5:
        return structured[:max_size]
    out = bytearray(data)
    for _ in range(1 + int(rng.expovariate(0.7))):
        _edit(out, rng, corpus)
    return bytes(out[:max_size])


def _edit(buf: bytearray, rng: random.Random, corpus: list[bytes]) -> None:
    op = rng.randrange(9)
    n = len(buf)
    if op == 0 and n:  # flip a bit
        i = rng.randrange(n)
        buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and n:  # set a byte
        buf[rng.randrange(n)] = rng.randrange(256)
    elif op == 2 and n:  # delete a run
        i = rng.randrange(n)
        del buf[i:i + rng.randint(1, 64)]
    elif op == 3:  # insert random bytes
        i = rng.randint(0, n)
        buf[i:i] = rng.randbytes(rng.randint(1, 32))
    elif op == 4 and n >= 2:  # duplicate a run
        i = rng.randrange(n)
        j = min(n, i + rng.randint(1, 256))
        k = rng.randint(0, n)
        buf[k:k] = buf[i:j]
    elif op == 5 and n >= 4:  # an interesting integer, little or big endian, 1-8 bytes wide
        width = rng.choice((1, 2, 4, 8))
        i = rng.randrange(max(1, n - width + 1))
        value = rng.choice(_INTERESTING_INTS) % (1 << (8 * width))
        buf[i:i + width] = value.to_bytes(width, rng.choice(("little", "big")))
    elif op == 6 and n:  # truncate
        del buf[rng.randrange(n):]
    elif op == 7 and corpus:  # splice with another input
        other = rng.choice(corpus)
        i, j = rng.randint(0, n), rng.randint(0, len(other))
        buf[i:] = other[j:]
    elif op == 8 and n >= 2:  # copy a run over another place
        i, k = rng.randrange(n), rng.randrange(n)
        run = buf[i:i + rng.randint(1, 64)]
        buf[k:k + len(run)] = run


def _mutate_json(data: bytes, rng: random.Random) -> bytes | None:
    """Swap one value of a JSON document (after an optional one-byte target prefix) for an odd one."""
    for skip in (0, 1):
        try:
            doc = json.loads(data[skip:])
        except (ValueError, RecursionError):
            continue
        nodes = list(_walk(doc))
        if not nodes:
            return None
        parent, key = rng.choice(nodes)
        choice = rng.choice(_JSON_VALUES)
        if parent is None:
            doc = choice
        elif rng.random() < 0.2 and isinstance(parent, dict):
            parent.pop(key, None)  # a field that is missing
        else:
            parent[key] = choice
        text = json.dumps(doc)
        if _DEEP in text:
            depth = rng.choice((100, 1000, 100_000))
            text = text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth, 1)
        return data[:skip] + text.encode("utf-8", "surrogatepass")
    return None


def _walk(doc: object, parent: object = None, key: object = None):
    yield parent, key
    if isinstance(doc, dict):
        for k, v in list(doc.items()):
            yield from _walk(v, doc, k)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _walk(v, doc, i)
