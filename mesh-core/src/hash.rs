//! A fast unkeyed hasher (the Fx hash of rustc and Firefox) for maps keyed by configuration:
//! cluster names, endpoint addresses. Never for keys a client chooses and inserts (a header,
//! a path): those need std's keyed SipHash against collision flooding.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The Fx hash: a rotate, an xor and a multiply per word.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("eight bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`FxHasher`]s.
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;
/// A map keyed by configuration.
pub type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;
/// A set of configuration keys.
pub type FxHashSet<K> = HashSet<K, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;

    fn hash(v: impl Hash) -> u64 {
        FxBuildHasher::default().hash_one(v)
    }

    #[test]
    fn distinct_keys_hash_apart_and_maps_work() {
        assert_ne!(hash("outbound|9080|v1|reviews"), hash("outbound|9080|v2|reviews"));
        assert_ne!(hash([1u8, 2]), hash([1u8, 2, 0]), "the length counts");
        let addrs: Vec<std::net::SocketAddr> = (0..1000).map(|p| ([10, 0, 0, 1], 9000 + p).into()).collect();
        let set: FxHashSet<_> = addrs.iter().copied().collect();
        assert_eq!(set.len(), 1000);
        assert!(addrs.iter().all(|a| set.contains(a)));
        let hashes: HashSet<u64> = addrs.iter().map(hash).collect();
        assert_eq!(hashes.len(), 1000);
    }
}
