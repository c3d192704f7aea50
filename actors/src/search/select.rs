//! Keeping `branch` of a round's scored children (TSST.md, step 3).
use tsst_messages::{stable_hash, Node, SearchSpec, Selection};

/// The score a candidate is ranked by: its value, or with `use_value: false` the
/// policy's mean token probability over the whole partial solution (exp of the mean
/// log-probability), which is in (0, 1] like a value and so goes through the same rule.
/// Finished solutions are reported in the same order.
pub fn score(node: &Node, spec: &SearchSpec) -> f64 {
    if spec.use_value {
        node.value.unwrap_or(0.0)
    } else {
        node.mean_logprob().exp()
    }
}

/// A score as it orders candidates and solutions: NaN lowest.
pub fn rank_key(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score
    }
}

/// Highest score first, NaN last; ties keep their order (the sort is stable).
fn rank_by_score(order: &mut [usize], scores: &[f64]) {
    order.sort_by(|&a, &b| rank_key(scores[b]).total_cmp(&rank_key(scores[a])));
}

/// Indices of the candidates to keep, in the order they were chosen. `candidates` must
/// be in a deterministic order (frontier position, then sample index) so the draw is
/// the same on every worker.
pub fn select(candidates: &[Node], spec: &SearchSpec, question: &str, round: u32) -> Vec<usize> {
    let branch = spec.branch as usize;
    if candidates.len() <= branch {
        return (0..candidates.len()).collect();
    }
    let scores: Vec<f64> = candidates.iter().map(|n| score(n, spec)).collect();
    let mut by_value: Vec<usize> = (0..candidates.len()).collect();
    rank_by_score(&mut by_value, &scores);
    match spec.selection {
        Selection::Top => {
            by_value.truncate(branch);
            by_value
        }
        Selection::Sample => {
            let seed = stable_hash(&[
                b"select",
                &spec.seed.to_le_bytes(),
                question.as_bytes(),
                &round.to_le_bytes(),
            ]);
            sample(&scores, &by_value, branch, spec.selection_temperature, seed)
        }
    }
}

/// Draws `k` candidates without replacement with probability proportional to
/// `score^(1/temperature)` among those not yet drawn (the reference drew with
/// replacement and could keep a node twice).
///
/// Scores that carry no weight keep the value order instead of a uniform draw: an
/// infinite score is taken first (it would take all the weight), and when every
/// remaining score is <= 0 or NaN (a raw value head can go negative) the best of them
/// fill the remaining places. Weights are taken relative to the largest score, so no
/// power overflows into an infinite total.
fn sample(scores: &[f64], by_value: &[usize], k: usize, temperature: f64, seed: u64) -> Vec<usize> {
    let mut chosen: Vec<usize> = by_value
        .iter()
        .copied()
        .filter(|&i| scores[i] == f64::INFINITY)
        .take(k)
        .collect();
    let largest = scores
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0)
        .fold(0.0, f64::max);
    let exponent = 1.0 / temperature;
    let weight = |s: f64| {
        if s.is_finite() && s > 0.0 {
            (s / largest).powf(exponent)
        } else {
            0.0
        }
    };
    let mut left: Vec<(usize, f64)> = (0..scores.len())
        .map(|i| (i, weight(scores[i])))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    let mut rng = seed;
    while chosen.len() < k && !left.is_empty() {
        rng = tsst_messages::splitmix64(rng);
        let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
        let total: f64 = left.iter().map(|&(_, w)| w).sum();
        let target = u * total;
        let mut acc = 0.0;
        let mut pick = left.len() - 1;
        for (pos, &(_, w)) in left.iter().enumerate() {
            acc += w;
            if target < acc {
                pick = pos;
                break;
            }
        }
        chosen.push(left.remove(pick).0);
    }
    for &i in by_value {
        if chosen.len() >= k {
            break;
        }
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::spec;
    use tsst_messages::NodeId;

    fn node(i: u64, value: f64) -> Node {
        let mut n = Node::root(NodeId(i));
        n.value = Some(value);
        n
    }

    #[test]
    fn keeps_everything_when_few() {
        let s = spec();
        let c: Vec<Node> = (0..2).map(|i| node(i, 0.5)).collect();
        assert_eq!(select(&c, &s, "q", 0), vec![0, 1]);
    }

    #[test]
    fn top_keeps_the_best() {
        let mut s = spec();
        s.selection = Selection::Top;
        s.branch = 2;
        let c: Vec<Node> = [0.1, 0.9, 0.5, 0.7]
            .iter()
            .enumerate()
            .map(|(i, &v)| node(i as u64, v))
            .collect();
        assert_eq!(select(&c, &s, "q", 0), vec![1, 3]);
    }

    #[test]
    fn sampling_never_repeats_and_is_seeded() {
        let mut s = spec();
        s.branch = 3;
        let c: Vec<Node> = [0.9, 0.9, 0.9, 0.1, 0.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| node(i as u64, v))
            .collect();
        for round in 0..50 {
            let kept = select(&c, &s, "q", round);
            assert_eq!(kept, select(&c, &s, "q", round));
            let mut unique = kept.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 3, "{kept:?}");
            assert!(
                !kept.contains(&4) || kept.contains(&3),
                "zero weight only when forced"
            );
        }
    }

    #[test]
    fn sampling_follows_squared_values() {
        // Weights 0.8^2 : 0.4^2 = 4 : 1, so the first is kept alone ~80% of the time.
        let mut s = spec();
        s.branch = 1;
        let c = vec![node(0, 0.8), node(1, 0.4)];
        let firsts = (0..4000)
            .filter(|&r| select(&c, &s, "q", r) == vec![0])
            .count();
        assert!((3000..3400).contains(&firsts), "{firsts}");
    }

    #[test]
    fn without_weight_the_value_order_decides() {
        // Every value <= 0: the best of them, not a uniform draw.
        let mut s = spec();
        s.branch = 2;
        let c = vec![node(0, -1.0), node(1, 0.0), node(2, -0.5), node(3, -3.0)];
        for round in 0..200 {
            assert_eq!(select(&c, &s, "q", round), vec![1, 2], "round {round}");
        }
        // One positive value is drawn first; the rest by value order.
        let c = vec![
            node(0, -1.0),
            node(1, 0.3),
            node(2, -0.5),
            node(3, f64::NAN),
        ];
        for round in 0..200 {
            assert_eq!(select(&c, &s, "q", round), vec![1, 2], "round {round}");
        }
    }

    #[test]
    fn nan_ranks_lowest_in_both_modes() {
        let mut s = spec();
        s.branch = 2;
        let c = vec![node(0, f64::NAN), node(1, 0.1), node(2, 0.2)];
        s.selection = Selection::Top;
        assert_eq!(select(&c, &s, "q", 0), vec![2, 1]);
        s.selection = Selection::Sample;
        for round in 0..200 {
            let mut kept = select(&c, &s, "q", round);
            kept.sort();
            assert_eq!(kept, vec![1, 2], "round {round}");
        }
    }

    #[test]
    fn an_infinite_value_is_kept_and_the_rest_still_weighted() {
        let mut s = spec();
        s.branch = 2;
        // 0.9^2 : 0.1^2 = 81 : 1 after the infinite one.
        let c = vec![node(0, 0.1), node(1, f64::INFINITY), node(2, 0.9)];
        let mut second_is_best = 0;
        for round in 0..1000 {
            let kept = select(&c, &s, "q", round);
            assert_eq!(kept[0], 1, "round {round}");
            second_is_best += usize::from(kept[1] == 2);
        }
        assert!(second_is_best > 950, "{second_is_best}");
        // Finite values whose squares overflow are still weighted, not drawn uniformly.
        let c = vec![node(0, 1e300), node(1, 1e290)];
        s.branch = 1;
        let firsts = (0..500)
            .filter(|&r| select(&c, &s, "q", r) == vec![0])
            .count();
        assert!(firsts > 490, "{firsts}");
    }
}
