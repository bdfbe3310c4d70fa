"""RFC 6962 / RFC 9162 Merkle tree over the audit log's leaf hashes.

Pure functions over 32-byte SHA-256 hashes, in the style of
transparency-dev/merkle:

    leaf_hash(d)       = SHA-256(0x00 || d)           RFC 9162 2.1.1
    node_hash(l, r)    = SHA-256(0x01 || l || r)
    root_hash(leaves)  = MTH(D[n]); MTH({}) = SHA-256("")

Writer side: CompactTree keeps only the roots of the perfect subtrees on the
tree's right border (one per set bit of the size), so append and root are
O(log n) and the state a service saves across restarts is O(log n) hashes.

Proof side: inclusion_proof / consistency_proof produce PATH and PROOF
(RFC 6962 2.1.1 / 2.1.2). They accept a list of leaf hashes, or any iterable
together with an explicit size, which they consume in ONE pass keeping
O(log n) memory: the CLI can stream leaf hashes straight from a log file.

Verifiers (RFC 9162 2.1.3.2 / 2.1.4.2, as in transparency-dev proof/verify.go)
first check the shape of the input, then compute a root from the proof and
only afterwards compare it with the expected one; they return None or raise
ProofError (RootMismatch when the computed root differs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from itertools import islice

from enforcer.errors import IntegrityError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"  # domain separation: a leaf can never pass for a node
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(IntegrityError):
    """A Merkle proof or its parameters are malformed or do not verify."""

    code = "proof_invalid"


class RootMismatch(ProofError):
    """The root computed from a proof differs from the expected root."""

    code = "proof_root_mismatch"

    def __init__(self, what: str, expected: bytes, calculated: bytes) -> None:
        super().__init__(f"{what} mismatch: expected {expected.hex()}, calculated {calculated.hex()}")
        self.expected = expected
        self.calculated = calculated


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _check_hash(h: object, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        n = len(h) if isinstance(h, (bytes, bytearray)) else type(h).__name__
        raise ProofError(f"{what}: expected {HASH_SIZE} bytes, got {n}")


def _check_size(n: object, what: str) -> int:
    # bool is an int subclass; True as a tree size is surely a caller bug.
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ProofError(f"{what} must be a non-negative integer, got {n!r}")
    return n


def _split(n: int) -> int:
    """k of RFC 6962: the largest power of two strictly smaller than n >= 2."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------- writer side


class CompactTree:
    """Append-only Merkle tree that remembers only its right border.

    _hashes[i] is the root of a perfect subtree, largest (leftmost) first, one
    per set bit of size from the most significant down. Appending a leaf
    merges equal-sized subtrees exactly like carrying in binary addition.
    """

    __slots__ = ("_size", "_hashes")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> CompactTree:
        """Restore from state(). Only the shape is checked: the caller must
        compare root() with a trusted (signed) root to trust the content."""
        _check_size(size, "size")
        if len(hashes) != size.bit_count():
            raise ProofError(f"compact state for size {size} needs {size.bit_count()} hashes, got {len(hashes)}")
        for i, h in enumerate(hashes):
            _check_hash(h, f"compact state hash {i}")
        tree = cls()
        tree._size, tree._hashes = size, list(hashes)
        return tree

    def state(self) -> tuple[int, tuple[bytes, ...]]:
        return self._size, tuple(self._hashes)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        _check_hash(leaf, "leaf hash")
        h, s = leaf, self._size
        while s & 1:  # each trailing 1 bit is a subtree of the new one's size
            h = node_hash(self._hashes.pop(), h)
            s >>= 1
        self._hashes.append(h)
        self._size += 1

    def root(self) -> bytes:
        # MTH splits at the largest power of two, so the border subtrees fold
        # right to left: MTH = H(s0, H(s1, ... H(s_{k-1}, s_k))).
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            root = node_hash(h, root)
        return root


def root_hash(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of the given leaf hashes (any iterable; O(log n) memory)."""
    tree = CompactTree()
    for h in leaf_hashes:
        tree.append(h)
    return tree.root()


# ---------------------------------------------------------------- proof side
#
# Every hash in a proof is MTH of a contiguous range of leaves, and the ranges
# of one proof are disjoint. So we first derive the ranges from the sizes
# alone (following the RFC recursion iteratively), then hash all of them in a
# single pass over the leaves: O(n) hashing, never quadratic, O(log n) memory.


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """PATH(m, D[n]) of RFC 6962 2.1.1 as leaf ranges, leaf-to-root order."""
    out, lo, hi = [], 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo += k
    out.reverse()  # the recursion appends outer (upper) nodes last
    return out


def _consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """SUBPROOF(m, D[n], true) of RFC 6962 2.1.2 as leaf ranges."""
    out, lo, hi, b = [], 0, new, True
    while old != hi - lo:
        k = _split(hi - lo)
        if old <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo, old, b = lo + k, old - k, False
    if not b:  # old subtree is not the old root itself: the verifier needs it
        out.append((lo, hi))
    out.reverse()
    return out


def _range_hashes(leaf_hashes: Iterable[bytes], ranges: list[tuple[int, int]]) -> list[bytes]:
    """MTH of each disjoint range, in one pass over leaf_hashes."""
    out = [b""] * len(ranges)
    it, pos = iter(leaf_hashes), 0
    for i in sorted(range(len(ranges)), key=lambda j: ranges[j][0]):
        begin, end = ranges[i]
        if sum(1 for _ in islice(it, begin - pos)) != begin - pos:
            raise ProofError(f"leaf stream ended before leaf {begin}")
        tree = CompactTree()
        for h in islice(it, end - begin):
            tree.append(h)
        if tree.size != end - begin:
            raise ProofError(f"leaf stream ended before leaf {end}")
        out[i], pos = tree.root(), end
    return out


def _size_of(leaf_hashes: Iterable[bytes], size: int | None) -> int:
    if size is None:
        if not isinstance(leaf_hashes, Sequence):
            raise ProofError("an iterator of leaf hashes needs an explicit size")
        return len(leaf_hashes)
    return _check_size(size, "tree size")


def inclusion_proof(leaf_hashes: Iterable[bytes], index: int, size: int | None = None) -> list[bytes]:
    """Audit path for leaf `index` in the tree of the first `size` leaves.

    `size` defaults to len(leaf_hashes); pass it to stream any iterable.
    """
    size = _size_of(leaf_hashes, size)
    if not 0 <= _check_size(index, "index") < size:
        raise ProofError(f"index {index} out of range for tree size {size}")
    return _range_hashes(leaf_hashes, _inclusion_ranges(index, size))


def consistency_proof(leaf_hashes: Iterable[bytes], old_size: int, new_size: int | None = None) -> list[bytes]:
    """PROOF(old_size, D[new_size]); empty when old_size is 0 or new_size."""
    new_size = _size_of(leaf_hashes, new_size)
    if _check_size(old_size, "old size") > new_size:
        raise ProofError(f"old size {old_size} > new size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    return _range_hashes(leaf_hashes, _consistency_ranges(old_size, new_size))


# -------------------------------------------------------------- verification


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split an inclusion proof for `index` in `size` where the paths to
    `index` and `size - 1` meet: (inner, border) lengths. Below that point
    siblings sit on either side; above it they are all left-hand subtrees."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    # Only the left siblings: they alone existed in the older tree.
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    _check_size(index, "index")
    _check_size(tree_size, "tree size")
    if index >= tree_size:
        raise ProofError(f"index {index} out of range for tree size {tree_size}")
    _check_hash(leaf, "leaf hash")
    for i, h in enumerate(proof):
        _check_hash(h, f"proof[{i}]")
    inner, border = _decompose(index, tree_size)
    if len(proof) != inner + border:
        raise ProofError(f"wrong proof length {len(proof)}, want {inner + border}")
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2: leaf `leaf` is at `index` in the tree (tree_size, root)."""
    _check_hash(root, "root")
    calculated = root_from_inclusion_proof(leaf, index, tree_size, proof)
    if calculated != root:
        raise RootMismatch("root", root, calculated)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 2.1.4.2: the tree (new_size, new_root) extends (old_size, old_root)."""
    _check_size(old_size, "old size")
    _check_size(new_size, "new size")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for i, h in enumerate(proof):
        _check_hash(h, f"proof[{i}]")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} > new size {new_size}")
    if old_size == 0 or old_size == new_size:
        # Nothing to prove (RFC 9162 leaves size 0 undefined; transparency-dev
        # accepts it with an empty proof). The old root is still checked: the
        # only root of an empty tree is SHA-256(""), and equal sizes must have
        # equal roots.
        if proof:
            raise ProofError(f"proof must be empty for sizes {old_size} -> {new_size}")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise RootMismatch("empty tree root", EMPTY_ROOT, old_root)
        if old_size == new_size and old_root != new_root:
            raise RootMismatch("root", old_root, new_root)
        return
    if not proof:
        raise ProofError("empty consistency proof")

    # The proof is a suffix of the inclusion proof of leaf old_size - 1 in the
    # new tree, starting at the level of the largest perfect subtree that ends
    # the old tree (level = trailing zeros of old_size).
    inner, border = _decompose(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    if old_size == 1 << shift:  # the old tree is that subtree: seed is old_root
        seed, rest = old_root, list(proof)
    else:  # otherwise the proof starts with that subtree's hash
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        want = inner + border + (len(proof) - len(rest))
        raise ProofError(f"wrong proof length {len(proof)}, want {want}")

    mask = (old_size - 1) >> shift
    calc_old = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    calc_new = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if calc_old != old_root:
        raise RootMismatch("old root", old_root, calc_old)
    if calc_new != new_root:
        raise RootMismatch("new root", new_root, calc_new)
