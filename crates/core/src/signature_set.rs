//! Hash sets and maps keyed by row signature, with a hasher suited to keys that are hashes
//! already: the commit path of every backend looks signatures up once per mutation.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for row signatures, which are usually hashes already: one multiply spreads
/// sequential upstream signatures too, at a fraction of SipHash's cost on the commit path.
#[derive(Default, Clone, Copy)]
pub struct SignatureHasher(u64);

impl Hasher for SignatureHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fold the high half down so the table's low index bits see every input bit.
        let x = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

/// A set of row signatures.
pub type SignatureSet = HashSet<u64, BuildHasherDefault<SignatureHasher>>;

/// A map keyed by row signature.
pub type SignatureMap<V> = HashMap<u64, V, BuildHasherDefault<SignatureHasher>>;
