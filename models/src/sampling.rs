//! Choosing the next token: greedy at temperature 0, otherwise a draw from the
//! temperature-scaled distribution (top-p 1, no truncation).
//!
//! Each sample has its own generator seeded from its request's seed, so a sample's
//! tokens do not depend on which other requests share the batch.
use tsst_messages::splitmix64;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64: the sequence `splitmix64(seed + k * golden)`.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(GOLDEN);
        out
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One chosen token and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub token: i64,
    /// Log-probability under the model's own (temperature 1) distribution, whatever
    /// temperature drew the token, so log-probabilities of steps drawn at different
    /// temperatures rank on one scale.
    pub logprob: f64,
}

/// Chooses from `logits`; a NaN logit counts as impossible.
pub fn choose(logits: &[f32], temperature: f64, rng: &mut Rng) -> Choice {
    choose_with(logits, temperature, || rng.next_f64())
}

/// [`choose`] with the uniform draw in [0, 1) given by `draw`, called only when the
/// choice is random (positive temperature, finite logits).
pub fn choose_with(logits: &[f32], temperature: f64, draw: impl FnOnce() -> f64) -> Choice {
    let value = |v: f32| {
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            f64::from(v)
        }
    };
    // The first maximum, as torch/numpy argmax pick it, so greedy ties agree.
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if value(v) > value(logits[best]) {
            best = i;
        }
    }
    let max = value(logits.get(best).copied().unwrap_or(0.0));
    let log_sum = max
        + logits
            .iter()
            .map(|&v| (value(v) - max).exp())
            .sum::<f64>()
            .ln();
    let token = if temperature <= 0.0 || !max.is_finite() {
        best
    } else {
        let weights: Vec<f64> = logits
            .iter()
            .map(|&v| ((value(v) - max) / temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut u = draw() * total;
        let mut pick = best;
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                pick = i;
                if u < *w {
                    break;
                }
                u -= w;
            }
        }
        pick
    };
    Choice {
        token: token as i64,
        logprob: value(logits.get(token).copied().unwrap_or(0.0)) - log_sum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = Rng::new(1);
        let c = choose(&[0.0, 2.0, 2.0, -1.0], 0.0, &mut rng);
        assert_eq!(c.token, 1);
        let expected = 2.0 - (1.0f64 + 2.0 * 2f64.exp() + (-1f64).exp()).ln();
        assert!((c.logprob - expected).abs() < 1e-9);
    }

    #[test]
    fn sampling_is_reproducible_and_follows_the_distribution() {
        let logits = [0.0f32, 1.0, 2.0];
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..3000)
                .map(|_| choose(&logits, 1.0, &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let counts = draw(7).iter().fold([0usize; 3], |mut c, &t| {
            c[t as usize] += 1;
            c
        });
        // softmax([0,1,2]) = [0.090, 0.245, 0.665]
        assert!(
            (counts[2] as f64 / 3000.0 - 0.665).abs() < 0.04,
            "{counts:?}"
        );
        assert!(
            (counts[0] as f64 / 3000.0 - 0.090).abs() < 0.03,
            "{counts:?}"
        );
    }

    #[test]
    fn low_temperature_concentrates_but_logprob_is_untempered() {
        let mut rng = Rng::new(3);
        let c = choose(&[0.0, 5.0], 0.01, &mut rng);
        assert_eq!(c.token, 1);
        assert!((c.logprob - (5.0 - (1.0f64 + 5f64.exp()).ln())).abs() < 1e-9);
    }

    #[test]
    fn nan_logits_are_never_drawn() {
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            assert_eq!(choose(&[f32::NAN, 0.0], 1.0, &mut rng).token, 1);
        }
    }
}
