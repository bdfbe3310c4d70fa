"""RFC 6962 / RFC 9162 Merkle tree: published vectors, corruption, properties."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.audit import merkle
from enforcer.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    ProofError,
    RootMismatch,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from enforcer.errors import AuditError

h = bytes.fromhex

# --------------------------------------------------------------------------
# Published test data of the Certificate Transparency ecosystem. Leaves,
# roots and node hashes: transparency-dev/merkle testonly/constants.go
# (LeafInputs, RootHashes, NodeHashes), whose roots are the constants of
# google/certificate-transparency cpp/merkletree/merkle_tree_test.cc.
# Proofs: transparency-dev/merkle proof/verify_test.go and
# testonly/reference_test.go (TestRefInclusionProof, TestRefConsistencyProof).

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
LEAF_HASHES = [leaf_hash(d) for d in LEAVES]

ROOTS = {  # tree size -> root
    0: h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    1: h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    2: h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    3: h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    4: h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    5: h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    6: h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    7: h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    8: h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
}

NODES = [  # NodeHashes(): [level][index] of every perfect subtree
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]

# (0-based index, tree size, proof). verify_test.go numbers leaves from 1.
INCLUSION_VECTORS = [
    (0, 1, []),
    (0, 2, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")]),
    (1, 2, [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")]),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
    (0, 8, [
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (5, 8, [
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
]  # fmt: skip

# (old size, new size, proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, [
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (6, 8, [
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 5, [
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
    (6, 7, [
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
]  # fmt: skip

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


# --------------------------------------------------------------------------
# Reference implementation straight from RFC 6962 section 2.1 (MTH, PATH,
# PROOF/SUBPROOF), over leaf hashes. Memoised on (lo, hi) so that checking
# every prefix size of one list stays O(n log n) instead of O(n^2).


class Ref:
    def __init__(self, leaves: list[bytes]) -> None:
        self.d = tuple(leaves)

    @staticmethod
    def k(n: int) -> int:  # largest power of two smaller than n
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    @cache  # noqa: B019 - instances live for one example
    def mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.d[lo]  # already MTH({d}) = leaf_hash(d)
        k = self.k(n)
        return node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = self.k(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True)

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = self.k(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]


def make_leaves(n: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(seed.to_bytes(8, "big") + i.to_bytes(4, "big")) for i in range(n)]


# -------------------------------------------------------------- known values


def test_hash_prefixes():
    assert merkle.LEAF_PREFIX == b"\x00" and merkle.NODE_PREFIX == b"\x01"
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert root_hash([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_leaf_and_node_hashes_match_published():
    assert LEAF_HASHES == NODES[0]
    for level in range(1, 4):
        for i, want in enumerate(NODES[level]):
            assert node_hash(NODES[level - 1][2 * i], NODES[level - 1][2 * i + 1]) == want


@pytest.mark.parametrize("size", range(9))
def test_roots_match_published(size):
    assert root_hash(LEAF_HASHES[:size]) == ROOTS[size]
    assert root_hash(iter(LEAF_HASHES[:size])) == ROOTS[size]


def test_compact_tree_matches_published_roots_and_states():
    # CompactTrees() of testonly/constants.go: the border at every size.
    states = [[], [(0, 0)], [(1, 0)], [(1, 0), (0, 2)], [(2, 0)], [(2, 0), (0, 4)],
              [(2, 0), (1, 2)], [(2, 0), (1, 2), (0, 6)], [(3, 0)]]  # fmt: skip
    tree = CompactTree()
    for size in range(9):
        assert tree.size == size
        assert tree.root() == ROOTS[size]
        assert tree.state() == (size, tuple(NODES[lv][i] for lv, i in states[size]))
        if size < 8:
            tree.append(LEAF_HASHES[size])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_vectors(index, size, proof):
    assert inclusion_proof(LEAF_HASHES[:size], index) == proof
    assert inclusion_proof(iter(LEAF_HASHES), index, size) == proof
    verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])
    for bad in corrupt_inclusion(index, size, proof, ROOTS[size], LEAF_HASHES[index]):
        with pytest.raises(ProofError):
            verify_inclusion(*bad)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old, new, proof):
    assert consistency_proof(LEAF_HASHES[:new], old) == proof
    assert consistency_proof(iter(LEAF_HASHES), old, new) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    if proof:
        for bad in corrupt_consistency(old, new, ROOTS[old], ROOTS[new], proof):
            with pytest.raises(ProofError):
                verify_consistency(*bad)


# ------------------------------------------------------------------ corruption


def flipped(proof, i, bit):
    out = list(proof)
    out[i] = bytes([out[i][0] ^ (1 << bit)]) + out[i][1:]
    return out


def corrupt_inclusion(index, size, proof, root, leaf):
    """Like corruptInclusionProof of transparency-dev verify_test.go, plus
    wrong-length hashes. Each tuple is verify_inclusion's arguments."""
    cases = [
        (leaf, index - 1, size, proof, root) if index > 0 else (leaf, size, size, proof, root),
        (leaf, index + 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (leaf_hash(b"WrongLeaf"), index, size, proof, root),
        (leaf, index, size, proof, EMPTY_ROOT),
        (leaf, index, size, proof, SOME_HASH),
        (leaf, index, size, proof + [b""], root),
        (leaf, index, size, proof + [root], root),
        (leaf, index, size, [b""] + proof, root),
        (leaf, index, size, [root] + proof, root),
        # Wrong hash lengths.
        (leaf[:31], index, size, proof, root),
        (leaf + b"\x00", index, size, proof, root),
        (leaf, index, size, proof, root[:31]),
        (leaf, index, size, proof, b""),
    ]
    for i in range(len(proof)):
        cases += [(leaf, index, size, flipped(proof, i, bit), root) for bit in (0, 3, 7)]
        cases.append((leaf, index, size, proof[:i] + [proof[i][:31]] + proof[i + 1 :], root))
    if proof:
        cases.append((leaf, index, size, proof[:-1], root))  # truncated
        cases.append((leaf, index, size, proof[1:], root))
    if len(proof) > 1:
        cases.append((leaf, index, size, [proof[0], SOME_HASH] + proof[1:], root))  # inserted
    # A valid tuple could sneak in only if a corruption were a no-op.
    return [c for c in cases if c != (leaf, index, size, proof, root)]


def corrupt_consistency(old, new, root1, root2, proof):
    """corruptConsistencyProof of transparency-dev verify_test.go, plus
    wrong-length hashes. Each tuple is verify_consistency's arguments."""
    cases = [
        (old - 1, new, root1, root2, proof),
        (old + 1, new, root1, root2, proof),
        (old ^ 2, new, root1, root2, proof),
        (old, new * 2, root1, root2, proof),
        (old, new // 2, root1, root2, proof),
        (old, new, SOME_HASH, root2, proof),
        (old, new, root1, SOME_HASH, proof),
        (old, new, root2, root1, proof),
        (old, new, root1, root2, []),
        (old, new, root1, root2, proof + [b""]),
        (old, new, root1, root2, proof + [root1]),
        (old, new, root1, root2, proof + [root2]),
        (old, new, root1, root2, [b""] + proof),
        (old, new, root1, root2, [root1] + proof),
        (old, new, root1, root2, [root2] + proof),
        (old, new, root1, root2, [proof[0]] + proof),
        (old, new, root1, root2, proof[:-1]),
        (old, new, root1[:31], root2, proof),
        (old, new, root1, root2 + b"\x00", proof),
        (old, new, root1, root2, proof[:-1] + [proof[-1][:31]]),
    ]
    for i in range(len(proof)):
        cases += [(old, new, root1, root2, flipped(proof, i, bit)) for bit in (0, 4, 7)]
    return [c for c in cases if c != (old, new, root1, root2, proof)]


def test_errors_are_audit_errors():
    assert issubclass(ProofError, AuditError) and issubclass(RootMismatch, ProofError)
    with pytest.raises(RootMismatch) as exc:
        verify_inclusion(LEAF_HASHES[0], 0, 1, [], ROOTS[2])
    assert exc.value.expected == ROOTS[2] and exc.value.calculated == ROOTS[1]


@pytest.mark.parametrize(
    ("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (8, 8), (-1, 8), (0, -1), (True, 2)]
)
def test_inclusion_index_out_of_range(index, size):
    with pytest.raises(ProofError):
        verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    with pytest.raises(ProofError):
        inclusion_proof(LEAF_HASHES[: max(size, 0)], index)


def test_single_entry_inclusion():
    # transparency-dev TestVerifyInclusionSingleEntry: root == leaf hash.
    leaf = leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    for lf, root in [(leaf, b""), (b"", leaf), (b"", b""), (leaf, SOME_HASH)]:
        with pytest.raises(ProofError):
            verify_inclusion(lf, 0, 1, [], root)


def test_consistency_edge_cases():
    r1, r2 = ROOTS[1], ROOTS[2]
    # Always consistent: equal sizes with equal roots; from the empty tree.
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(1, 1, r1, r1, [])
    bad = [
        (0, 0, EMPTY_ROOT, r2, []),  # equal sizes, different roots
        (1, 1, r1, r2, []),
        (0, 1, r1, r1, []),  # an empty tree's root is SHA-256("")
        (0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT]),  # non-empty proof from size 0
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (1, 1, r1, r1, [EMPTY_ROOT]),
        (1, 0, r1, r2, []),  # time travel
        (2, 1, r1, r2, []),
        (1, 2, r1, r2, []),  # empty proof
        (-1, 2, r1, r2, []),
        (1, 1, b"short", b"short", []),
    ]
    for args in bad:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    with pytest.raises(ProofError):
        consistency_proof(LEAF_HASHES[:3], 4)
    assert consistency_proof(LEAF_HASHES[:3], 0) == consistency_proof(LEAF_HASHES[:3], 3) == []


def test_streaming_needs_size_and_enough_leaves():
    with pytest.raises(ProofError):
        inclusion_proof(iter(LEAF_HASHES), 0)  # an iterator has no len()
    with pytest.raises(ProofError):
        inclusion_proof(iter(LEAF_HASHES[:5]), 0, 8)  # stream too short
    with pytest.raises(ProofError):
        consistency_proof(iter(LEAF_HASHES[:5]), 3, 8)
    # Leaves beyond `size` are not read.
    assert inclusion_proof(iter(LEAF_HASHES + [b"junk"]), 2, 3) == INCLUSION_VECTORS[3][2]


def test_compact_tree_restore_and_bad_state():
    tree = CompactTree()
    for lh in LEAF_HASHES[:5]:
        tree.append(lh)
    restored = CompactTree.from_state(*tree.state())
    for lh in LEAF_HASHES[5:]:
        restored.append(lh)
    assert restored.root() == ROOTS[8] and restored.size == 8
    with pytest.raises(ProofError):
        CompactTree.from_state(5, [NODES[2][0]])  # 5 = 0b101 needs two hashes
    with pytest.raises(ProofError):
        CompactTree.from_state(4, [b"short"])
    with pytest.raises(ProofError):
        CompactTree.from_state(-1, [])
    with pytest.raises(ProofError):
        tree.append(b"not 32 bytes")


# ------------------------------------------------------------------ properties


def test_compact_tree_every_size_against_reference():
    leaves = make_leaves(2100)  # crosses 1024 and 2048
    ref, tree = Ref(leaves), CompactTree()
    for n, lh in enumerate(leaves, 1):
        tree.append(lh)
        assert tree.root() == ref.mth(0, n), n
        if n % 97 == 0:  # restoring mid-way changes nothing
            tree = CompactTree.from_state(*tree.state())
    assert root_hash(leaves) == ref.mth(0, len(leaves))


sizes = st.integers(min_value=1, max_value=3000)


@settings(max_examples=60, deadline=None)
@given(size=sizes, data=st.data(), seed=st.integers(0, 2**32))
def test_inclusion_property(size, data, seed):
    leaves = make_leaves(size, seed)
    ref = Ref(leaves)
    root = ref.mth(0, size)
    assert root_hash(leaves) == root
    for _ in range(3):
        index = data.draw(st.integers(0, size - 1))
        proof = inclusion_proof(leaves, index)
        assert proof == ref.path(index, 0, size)
        assert inclusion_proof(iter(leaves), index, size) == proof
        verify_inclusion(leaves[index], index, size, proof, root)
        for bad in corrupt_inclusion(index, size, proof, root, leaves[index]):
            with pytest.raises(ProofError):
                verify_inclusion(*bad)


@settings(max_examples=60, deadline=None)
@given(new=sizes, data=st.data(), seed=st.integers(0, 2**32))
def test_consistency_property(new, data, seed):
    leaves = make_leaves(new, seed)
    ref = Ref(leaves)
    for _ in range(3):
        old = data.draw(st.integers(0, new))
        proof = consistency_proof(leaves, old)
        assert proof == (ref.proof(old, new) if old else [])
        assert consistency_proof(iter(leaves), old, new) == proof
        root1, root2 = ref.mth(0, old), ref.mth(0, new)
        verify_consistency(old, new, root1, root2, proof)
        if proof:
            for bad in corrupt_consistency(old, new, root1, root2, proof):
                with pytest.raises(ProofError):
                    verify_consistency(*bad)
