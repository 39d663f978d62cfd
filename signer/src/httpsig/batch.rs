//! Batch signatures: one key signature over a Merkle tree of many requests'
//! signature bases, each request carrying its inclusion proof.
//!
//! Why: a P-256 signature costs more CPU than forwarding a whole request,
//! and a KMS Sign costs a network round trip and a share of a quota
//! (300/s for ECC keys by default). Requests that are ready to be signed at
//! the same moment share one signature; each one stays individually
//! verifiable, because its own signature base (method, target, digest,
//! `created`, `nonce`, …) is a leaf of the signed tree.
//!
//! The tree is RFC 9162's (§2.1.1: leaf = H(0x00 || base), node =
//! H(0x01 || left || right), split at the largest power of two below the
//! size), so inclusion proofs and their check are the RFC's (§2.1.3).
//! H follows the key's algorithm (SHA-256 for P-256, SHA-384 for P-384,
//! SHA-512 for RSA-PSS-SHA512 and Ed25519), so the tree is never weaker
//! than the signature over it. The key signs [`signed_message`]: a context
//! string, the tree size and the root. docs/wire-format.md is the contract.

use base64::Engine;
use http::HeaderMap;
use ring::digest::{self, Algorithm};
use sfv::ListEntry;

use super::alg::SigAlg;
use super::component::field_value;
use super::error::{malformed, HttpSigError};
use super::header::dictionary;

/// The `tag` of a batch signature: an RFC 9421 verifier that does not know
/// batches sees a signature that is not meant for it, rather than one that
/// does not verify.
pub const BATCH_TAG: &str = "kakunin-batch";
/// The field that carries a request's inclusion proof, as a dictionary
/// member under the signature's label:
/// `kakunin=(:<sibling>: …);index=<i>;size=<n>`.
pub const BATCH_PROOF: &str = "kakunin-batch-proof";
/// The most requests one signature covers. 2^20 would fit a proof in a
/// header; this bound keeps a proof at 8 siblings and a batch's wait short.
pub const MAX_BATCH: usize = 256;
/// A received proof longer than this is refused before any hashing.
const MAX_PATH_LEN: usize = 64;
/// Domain separation: what the key signs can never be taken for a plain
/// RFC 9421 signature base (those begin with `"`), nor for another
/// protocol's message.
const CONTEXT: &[u8] = b"kakunin-batch-v1\0";

fn hash_of(alg: SigAlg) -> &'static Algorithm {
    match alg {
        SigAlg::EcdsaP256Sha256 => &digest::SHA256,
        SigAlg::EcdsaP384Sha384 => &digest::SHA384,
        SigAlg::RsaPssSha512 | SigAlg::Ed25519 => &digest::SHA512,
    }
}

/// H(0x00 || base): a request's leaf.
pub fn leaf_hash(alg: SigAlg, base: &[u8]) -> Vec<u8> {
    let mut ctx = digest::Context::new(hash_of(alg));
    ctx.update(&[0x00]);
    ctx.update(base);
    ctx.finish().as_ref().to_vec()
}

fn node_hash(hash: &'static Algorithm, left: &[u8], right: &[u8]) -> Vec<u8> {
    let mut ctx = digest::Context::new(hash);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    ctx.finish().as_ref().to_vec()
}

/// What the key signs for a tree of `size` leaves with root `root`.
pub fn signed_message(size: u64, root: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTEXT.len() + 8 + root.len());
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(&size.to_be_bytes());
    message.extend_from_slice(root);
    message
}

/// The tree over one batch's leaves, every level kept so that each proof is
/// read off without rehashing. Built bottom-up: pairing neighbours and
/// carrying an odd last node up unchanged gives exactly RFC 9162's tree.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves; the last level is the root alone.
    levels: Vec<Vec<Vec<u8>>>,
}

impl MerkleTree {
    /// `leaves` are [`leaf_hash`]es, in the order their proofs will be asked
    /// for. None when there are none or more than [`MAX_BATCH`].
    pub fn new(alg: SigAlg, leaves: Vec<Vec<u8>>) -> Option<MerkleTree> {
        if leaves.is_empty() || leaves.len() > MAX_BATCH {
            return None;
        }
        let hash = hash_of(alg);
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(hash, left, right),
                    [lone] => lone.clone(),
                    _ => Vec::new(), // chunks(2) yields one or two
                })
                .collect();
            levels.push(above);
        }
        Some(MerkleTree { levels })
    }

    pub fn size(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    pub fn root(&self) -> &[u8] {
        self.levels
            .last()
            .and_then(|top| top.first())
            .map_or(&[], Vec::as_slice)
    }

    /// What the key signs for this tree.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.size() as u64, self.root())
    }

    /// Leaf `index`'s inclusion proof: its siblings from the bottom up,
    /// skipping the levels where it is carried up alone (RFC 9162 §2.1.3.1).
    pub fn proof(&self, index: usize) -> Option<BatchProof> {
        if index >= self.size() {
            return None;
        }
        let below_root = self.levels.split_last().map_or(&[][..], |(_, rest)| rest);
        let mut path = Vec::new();
        let mut at = index;
        for level in below_root {
            if let Some(sibling) = level.get(at ^ 1) {
                path.push(sibling.clone());
            }
            at >>= 1;
        }
        Some(BatchProof {
            index: index as u64,
            size: self.size() as u64,
            path,
        })
    }
}

/// One request's place in a signed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProof {
    pub index: u64,
    pub size: u64,
    /// Sibling hashes, bottom up.
    pub path: Vec<Vec<u8>>,
}

impl BatchProof {
    /// The `Kakunin-Batch-Proof` value under `label`.
    pub fn header_value(&self, label: &str) -> String {
        let engine = &base64::engine::general_purpose::STANDARD;
        // Each sibling is `:<base64>:` and a space; one allocation.
        let hash_len = self.path.first().map_or(0, Vec::len);
        let mut value =
            String::with_capacity(label.len() + 48 + self.path.len() * (hash_len * 4 / 3 + 8));
        value.push_str(label);
        value.push_str("=(");
        for (i, sibling) in self.path.iter().enumerate() {
            if i > 0 {
                value.push(' ');
            }
            value.push(':');
            engine.encode_string(sibling, &mut value);
            value.push(':');
        }
        let mut digits = itoa::Buffer::new();
        value.push_str(");index=");
        value.push_str(digits.format(self.index));
        value.push_str(";size=");
        value.push_str(digits.format(self.size));
        value
    }

    /// Reads the proof under `label` from a received message's headers.
    pub fn from_headers(headers: &HeaderMap, label: &str) -> Result<BatchProof, HttpSigError> {
        let value =
            field_value(headers, BATCH_PROOF)?.ok_or(HttpSigError::MissingHeader(BATCH_PROOF))?;
        Self::parse(&value, label)
    }

    /// The same from the field's value.
    pub fn parse(value: &str, label: &str) -> Result<BatchProof, HttpSigError> {
        let bad = |reason: &str| malformed(BATCH_PROOF, reason.to_string());
        let members = dictionary(BATCH_PROOF, value)?;
        let list = match members.get(label) {
            Some(ListEntry::InnerList(list)) => list,
            Some(ListEntry::Item(_)) => return Err(bad("the proof is not an inner list")),
            None => return Err(HttpSigError::LabelMissing(label.to_string())),
        };
        if list.items.len() > MAX_PATH_LEN {
            return Err(bad("the proof is longer than any batch"));
        }
        let mut path = Vec::with_capacity(list.items.len());
        for item in &list.items {
            if !item.params.is_empty() {
                return Err(bad("a sibling hash has parameters"));
            }
            let bytes = item
                .bare_item
                .as_byte_sequence()
                .ok_or_else(|| bad("a sibling hash is not a byte sequence"))?;
            path.push(bytes.to_vec());
        }
        let (mut index, mut size) = (None, None);
        for (key, value) in &list.params {
            let slot = match key.as_str() {
                "index" => &mut index,
                "size" => &mut size,
                _ => return Err(bad("unknown parameter")),
            };
            let number = value
                .as_integer()
                .map(i64::from)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| bad("index and size must be integers of 0 or more"))?;
            *slot = Some(number);
        }
        match (index, size) {
            (Some(index), Some(size)) if index < size => Ok(BatchProof { index, size, path }),
            (Some(_), Some(_)) => Err(bad("index is not below size")),
            _ => Err(bad("index and size are required")),
        }
    }

    /// The root that `leaf` and this proof lead to (RFC 9162 §2.1.3.2), or
    /// BadSignature when the proof does not fit a tree of its size.
    pub fn root(&self, alg: SigAlg, leaf: &[u8]) -> Result<Vec<u8>, HttpSigError> {
        let hash = hash_of(alg);
        if self.path.iter().any(|s| s.len() != hash.output_len()) {
            return Err(malformed(
                BATCH_PROOF,
                format!("a sibling hash is not {} bytes", hash.output_len()),
            ));
        }
        if self.index >= self.size {
            return Err(HttpSigError::BadSignature);
        }
        let (mut fnode, mut snode) = (self.index, self.size - 1);
        let mut root = leaf.to_vec();
        for sibling in &self.path {
            if snode == 0 {
                return Err(HttpSigError::BadSignature);
            }
            if fnode & 1 == 1 || fnode == snode {
                root = node_hash(hash, sibling, &root);
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            } else {
                root = node_hash(hash, &root, sibling);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if snode != 0 {
            return Err(HttpSigError::BadSignature);
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_header_values_are_written_as_the_wire_format_says() {
        let alone = BatchProof {
            index: 0,
            size: 1,
            path: Vec::new(),
        };
        assert_eq!(alone.header_value("kakunin"), "kakunin=();index=0;size=1");
        let two = BatchProof {
            index: 5,
            size: 8,
            path: vec![vec![0; 32], vec![1; 32]],
        };
        assert_eq!(
            two.header_value("kakunin"),
            "kakunin=(:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=: \
             :AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=:);index=5;size=8"
        );
    }

    /// RFC 6962's test leaves, as in certificate-transparency's tests.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// Their roots for trees of 1..=8 leaves (RFC 6962 test vectors; also
    /// recomputed with the RFC's recursive definition when written).
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        LEAVES[..n]
            .iter()
            .map(|l| leaf_hash(SigAlg::EcdsaP256Sha256, &hex(l)))
            .collect()
    }

    fn tree(n: usize) -> MerkleTree {
        MerkleTree::new(SigAlg::EcdsaP256Sha256, leaves(n)).unwrap()
    }

    #[test]
    fn roots_are_rfc_6962s() {
        for (n, root) in ROOTS.iter().enumerate() {
            assert_eq!(tree(n + 1).root(), hex(root), "tree of {}", n + 1);
        }
    }

    #[test]
    fn proofs_are_rfc_6962s() {
        let expect = [
            (
                2,
                5,
                [
                    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                8,
                [
                    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, path) in expect {
            let proof = tree(size).proof(index).unwrap();
            let path: Vec<Vec<u8>> = path.iter().map(|h| hex(h)).collect();
            assert_eq!(proof.path, path, "leaf {index} of {size}");
        }
    }

    #[test]
    fn every_proof_of_every_size_leads_to_the_root_and_no_other_does() {
        let alg = SigAlg::EcdsaP384Sha384;
        for size in 1..=40usize {
            let leaves: Vec<Vec<u8>> = (0..size)
                .map(|i| leaf_hash(alg, format!("request {i}").as_bytes()))
                .collect();
            let tree = MerkleTree::new(alg, leaves.clone()).unwrap();
            assert_eq!(tree.root().len(), 48);
            for (index, leaf) in leaves.iter().enumerate() {
                let proof = tree.proof(index).unwrap();
                let wire = BatchProof::parse(&proof.header_value("kakunin"), "kakunin").unwrap();
                assert_eq!(wire, proof);
                assert_eq!(proof.root(alg, leaf).unwrap(), tree.root());
                // Another leaf, another position, another size: not the root.
                let other = &leaves[(index + 1) % size];
                if size > 1 {
                    assert_ne!(proof.root(alg, other).unwrap(), tree.root());
                    let moved = BatchProof {
                        index: ((index + 1) % size) as u64,
                        ..proof.clone()
                    };
                    assert_ne!(moved.root(alg, leaf).ok().as_deref(), Some(tree.root()));
                }
                // A proof does not always pin the size (leaf 0's path is the
                // same in trees of 5 and 6), which is why the signed message
                // holds the size beside the root.
                let grown = BatchProof {
                    size: proof.size + 1,
                    ..proof.clone()
                };
                if let Ok(root) = grown.root(alg, leaf) {
                    assert_ne!(signed_message(grown.size, &root), tree.signed_message());
                }
            }
            assert!(tree.proof(size).is_none());
        }
    }

    #[test]
    fn a_leaf_cannot_pose_as_a_node() {
        // The 0x00/0x01 prefixes: an inner node's two children, offered as
        // a one-leaf "tree", do not hash to that node.
        let tree = tree(2);
        let forged = [tree.levels[0][0].clone(), tree.levels[0][1].clone()].concat();
        let single = MerkleTree::new(
            SigAlg::EcdsaP256Sha256,
            vec![leaf_hash(SigAlg::EcdsaP256Sha256, &forged)],
        )
        .unwrap();
        assert_ne!(single.root(), tree.root());
    }

    #[test]
    fn refuses_empty_and_oversized_batches() {
        assert!(MerkleTree::new(SigAlg::EcdsaP256Sha256, Vec::new()).is_none());
        let many = vec![vec![0u8; 32]; MAX_BATCH + 1];
        assert!(MerkleTree::new(SigAlg::EcdsaP256Sha256, many).is_none());
    }

    #[test]
    fn signed_message_binds_size_and_root() {
        let t = tree(3);
        assert_ne!(signed_message(3, t.root()), signed_message(4, t.root()));
        assert!(t.signed_message().starts_with(b"kakunin-batch-v1\0"));
    }

    #[test]
    fn refuses_malformed_proofs() {
        let root_ok = |v: &str| BatchProof::parse(v, "kakunin");
        let sib = ":".to_string() + &"A".repeat(43) + "=:"; // 32 bytes
        for bad in [
            "kakunin=:AAAA:".to_string(),
            format!("kakunin=({sib});index=1;size=1"),
            format!("kakunin=({sib});index=0"),
            format!("kakunin=({sib});index=-1;size=2"),
            format!("kakunin=({sib});index=0;size=2;extra=1"),
            format!("kakunin=({sib};x=1);index=0;size=2"),
            "kakunin=(\"text\");index=0;size=2".to_string(),
            "kakunin=(".to_string(),
            format!(
                "kakunin=({});index=0;size=2",
                vec![sib.as_str(); 65].join(" ")
            ),
        ] {
            let err = root_ok(&bad).unwrap_err();
            assert_eq!(err.code(), "signature_malformed", "{bad}: {err}");
        }
        let err = root_ok(&format!("other=({sib});index=0;size=2")).unwrap_err();
        assert_eq!(err.code(), "signature_missing");
        // A sibling of the wrong width is refused before hashing.
        let proof = root_ok("kakunin=(:AAAA:);index=0;size=2").unwrap();
        let err = proof.root(SigAlg::EcdsaP256Sha256, &[0; 32]).unwrap_err();
        assert_eq!(err.code(), "signature_malformed");
        // Too few siblings for the size, or too many: not the root.
        let proof = root_ok(&format!("kakunin=({sib});index=0;size=4")).unwrap();
        assert!(matches!(
            proof.root(SigAlg::EcdsaP256Sha256, &[0; 32]),
            Err(HttpSigError::BadSignature)
        ));
        let proof = root_ok(&format!("kakunin=({sib} {sib});index=0;size=2")).unwrap();
        assert!(matches!(
            proof.root(SigAlg::EcdsaP256Sha256, &[0; 32]),
            Err(HttpSigError::BadSignature)
        ));
    }
}
