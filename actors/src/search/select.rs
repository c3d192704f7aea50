//! Keeping `branch` of a round's scored children (TSST.md, step 3).
use tsst_messages::{stable_hash, Node, SearchSpec, Selection};

/// The score a candidate is ranked by: its value, or with `use_value: false` the
/// policy's mean token probability (exp of the mean log-probability), which is in
/// (0, 1] like a value and so goes through the same rule.
pub fn score(node: &Node, spec: &SearchSpec) -> f64 {
    if spec.use_value {
        node.value.unwrap_or(0.0)
    } else {
        node.mean_logprob().exp()
    }
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
    match spec.selection {
        Selection::Top => {
            let mut order: Vec<usize> = (0..candidates.len()).collect();
            // Stable sort: ties keep candidate order.
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            order.truncate(branch);
            order
        }
        Selection::Sample => {
            let exponent = 1.0 / spec.selection_temperature;
            // A raw value can be negative (the head has no sigmoid): such a candidate
            // gets no weight unless every remaining one has none.
            let weights: Vec<f64> = scores
                .iter()
                .map(|&s| if s > 0.0 { s.powf(exponent) } else { 0.0 })
                .collect();
            let seed = stable_hash(&[
                b"select",
                &spec.seed.to_le_bytes(),
                question.as_bytes(),
                &round.to_le_bytes(),
            ]);
            draw_without_replacement(&weights, branch, seed)
        }
    }
}

/// Draws `k` distinct indices with probability proportional to their weights among
/// those not yet drawn (the reference drew with replacement and could keep a node
/// twice); uniformly when all remaining weights are zero.
fn draw_without_replacement(weights: &[f64], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = seed;
    let mut left: Vec<usize> = (0..weights.len()).collect();
    let mut chosen = Vec::with_capacity(k);
    while chosen.len() < k && !left.is_empty() {
        rng = tsst_messages::splitmix64(rng);
        let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
        let total: f64 = left.iter().map(|&i| weights[i]).sum();
        let pick = if total > 0.0 && total.is_finite() {
            let target = u * total;
            let mut acc = 0.0;
            let mut pick = left.len() - 1;
            for (pos, &i) in left.iter().enumerate() {
                acc += weights[i];
                if target < acc {
                    pick = pos;
                    break;
                }
            }
            pick
        } else {
            ((u * left.len() as f64) as usize).min(left.len() - 1)
        };
        chosen.push(left.remove(pick));
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
    fn all_zero_is_uniform() {
        let mut s = spec();
        s.branch = 1;
        let c = vec![node(0, -1.0), node(1, 0.0)];
        let firsts = (0..2000)
            .filter(|&r| select(&c, &s, "q", r) == vec![0])
            .count();
        assert!((850..1150).contains(&firsts), "{firsts}");
    }
}
