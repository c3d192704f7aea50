//! CPython's `random.seed(n); random.shuffle(x)`, bit for bit, so that VCR's
//! `data_partition` names the same questions as the original tool, which orders VCR
//! ids with exactly that call.
//!
//! CPython seeds MT19937 (Matsumoto and Nishimura, 1998) with `init_by_array` over the
//! 32-bit words of `abs(n)`, least significant first (`[0]` for 0); `shuffle` walks
//! `i` from `len - 1` down to 1, swapping `x[i]` with `x[_randbelow(i + 1)]`, where
//! `_randbelow(n)` draws `getrandbits(n.bit_length())` until the draw is below `n`.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The Mersenne Twister as CPython's `random.Random` runs it.
#[derive(Clone)]
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.seed(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut r = PyRandom {
            mt: [0; N],
            index: N,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        // A non-zero initial state is assured.
        self.mt[0] = 0x8000_0000;
    }

    /// `genrand_uint32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            for k in 0..N {
                let y = (self.mt[k] & UPPER_MASK) | (self.mt[(k + 1) % N] & LOWER_MASK);
                let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
                self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `_randbelow(n)` for `1 <= n < 2^32` (one word per draw, as CPython for k <= 32).
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "_randbelow(0)");
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.next_u32() >> (32 - k);
            if r < n {
                return r;
            }
        }
    }

    /// `random.shuffle(items)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        assert!(
            items.len() <= u32::MAX as usize,
            "shuffle of more than 2^32 items"
        );
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `random.seed(s); [random.getrandbits(32) for _ in range(3)]` in CPython 3.11.
    #[test]
    fn words_match_cpython() {
        let first = |s: u64| {
            let mut r = PyRandom::new(s);
            [r.next_u32(), r.next_u32(), r.next_u32()]
        };
        assert_eq!(first(0), CPYTHON_SEED_0);
        assert_eq!(first(42), CPYTHON_SEED_42);
        assert_eq!(first((1 << 40) + 7), CPYTHON_SEED_2_40_PLUS_7);
    }

    const CPYTHON_SEED_0: [u32; 3] = [3626764237, 1654615998, 3255389356];
    const CPYTHON_SEED_42: [u32; 3] = [2746317213, 478163327, 107420369];
    const CPYTHON_SEED_2_40_PLUS_7: [u32; 3] = [2635837658, 3209733218, 3500038837];
}
