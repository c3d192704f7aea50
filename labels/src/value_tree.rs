//! assign_value_tree (TSST.md, "Value labels for the tree"): a prefix tree over one
//! question's verified solutions, and a value for every node of it.
//!
//! Nodes are identified by their step texts: two solutions whose first k steps are
//! equal strings share those k nodes. A node where a solution ends is an *end*,
//! correct or not per its verdict.
//!
//! Ends that are also inner nodes (one solution is a strict prefix of another) get no
//! special tree of their own; instead "a correct leaf is reachable" counts the node
//! itself:
//! - a correct end has `m = 0` and `r = 0` whatever lies below it (reaching it is
//!   already a correct answer);
//! - an incorrect end with children is an ordinary inner node: its `m` and `r` come
//!   from its children, so it is valued by what can still follow it.
//!
//! Two solutions ending at the same node with different verdicts (the verifier caches
//! by extracted answer, so this should not happen) make it a correct end.
/// One solution as the tree sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreePath<'a> {
    /// The reasoning steps from the root, in order.
    pub steps: &'a [String],
    /// The verifier's decision on the whole solution.
    pub correct: bool,
}

/// A labelled non-root node.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledNode {
    /// The index of each node among its parent's children, from the root's child down;
    /// children are numbered in the order the solutions first reach them, so the path
    /// is stable for a stable solution order.
    pub path: Vec<usize>,
    /// The steps from the root to this node, joined by single spaces (how the search
    /// writes a partial solution, so the value model sees the same text at inference).
    pub text: String,
    /// `v(node)`.
    pub value: f64,
    /// `m(node)` after inheritance from the nearest ancestor with a finite one.
    pub m: u32,
    /// `r(node) == 0`: a correct end is reachable from here (or this is one).
    pub reaches_correct: bool,
    /// `Some(correct)` where a solution ends here.
    pub end: Option<bool>,
}

impl LabelledNode {
    /// The path as `0.1.2`, for record ids.
    pub fn path_string(&self) -> String {
        self.path
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }
}

struct TreeNode<'a> {
    step: &'a str,
    parent: usize,
    child_index: usize,
    children: Vec<usize>,
    end: Option<bool>,
}

/// Labels every non-root node of the tree the paths make; empty when no path is
/// correct. Paths without steps are ignored (they end at the root, which is the prompt
/// alone and gets no record).
///
/// The nodes come in creation order, so every parent precedes its children.
pub fn assign_value_tree(paths: &[TreePath<'_>]) -> Vec<LabelledNode> {
    let nodes = build(paths);
    let n = nodes.len();

    // Bottom-up: children are always created after their parent, so reverse index
    // order visits every child before its parent.
    let mut m: Vec<Option<u32>> = vec![None; n];
    let mut reach = vec![false; n];
    for i in (0..n).rev() {
        if nodes[i].end == Some(true) {
            m[i] = Some(0);
            reach[i] = true;
            continue;
        }
        let best = nodes[i]
            .children
            .iter()
            .filter(|&&c| reach[c])
            .filter_map(|&c| m[c])
            .min();
        m[i] = best.map(|b| b.saturating_add(1));
        reach[i] = best.is_some();
    }
    if !reach[0] {
        return Vec::new();
    }

    // Top-down: a node at infinity takes its parent's (already inherited) m, which is
    // the m of its nearest ancestor with a finite one; the root's is finite here.
    let mut m_final = vec![0u32; n];
    m_final[0] = m[0].unwrap_or(0);
    let mut value = vec![0.0f64; n];
    let mut text: Vec<String> = vec![String::new(); n];
    let mut path: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut out = Vec::with_capacity(n.saturating_sub(1));
    for i in 1..n {
        let p = nodes[i].parent;
        m_final[i] = m[i].unwrap_or(m_final[p]);
        let r = if reach[i] { 0.0 } else { 1.0 };
        let w = (1.0 - value[p]) * (1.0 - 2.0 * r) / (f64::from(m_final[i]) + 1.0);
        value[i] = (value[p] + w).max(0.0);
        text[i] = if p == 0 {
            nodes[i].step.to_string()
        } else {
            format!("{} {}", text[p], nodes[i].step)
        };
        path[i] = path[p].clone();
        path[i].push(nodes[i].child_index);
        out.push(LabelledNode {
            path: path[i].clone(),
            text: text[i].clone(),
            value: value[i],
            m: m_final[i],
            reaches_correct: reach[i],
            end: nodes[i].end,
        });
    }
    out
}

/// The prefix tree; index 0 is the root.
fn build<'a>(paths: &[TreePath<'a>]) -> Vec<TreeNode<'a>> {
    let mut nodes = vec![TreeNode {
        step: "",
        parent: 0,
        child_index: 0,
        children: Vec::new(),
        end: None,
    }];
    for path in paths.iter().filter(|p| !p.steps.is_empty()) {
        let mut cur = 0;
        for step in path.steps {
            let existing = nodes[cur]
                .children
                .iter()
                .copied()
                .find(|&c| nodes[c].step == step.as_str());
            cur = match existing {
                Some(c) => c,
                None => {
                    let id = nodes.len();
                    let child_index = nodes[cur].children.len();
                    nodes[cur].children.push(id);
                    nodes.push(TreeNode {
                        step,
                        parent: cur,
                        child_index,
                        children: Vec::new(),
                        end: None,
                    });
                    id
                }
            };
        }
        nodes[cur].end = Some(nodes[cur].end.unwrap_or(false) || path.correct);
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn label(paths: &[(Vec<String>, bool)]) -> Vec<LabelledNode> {
        let tree: Vec<TreePath> = paths
            .iter()
            .map(|(s, c)| TreePath {
                steps: s,
                correct: *c,
            })
            .collect();
        assign_value_tree(&tree)
    }

    fn value_of(nodes: &[LabelledNode], text: &str) -> (f64, u32) {
        let n = nodes
            .iter()
            .find(|n| n.text == text)
            .unwrap_or_else(|| panic!("no node `{text}`"));
        (n.value, n.m)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn check(nodes: &[LabelledNode], text: &str, value: f64, m: u32) {
        let (v, got_m) = value_of(nodes, text);
        assert!(close(v, value), "{text}: value {v}, expected {value}");
        assert_eq!(got_m, m, "{text}: m");
    }

    #[test]
    fn single_correct_path_is_linear() {
        // root -> a -> b -> c (correct). m: c 0, b 1, a 2, root 3; r = 0 everywhere.
        // v(a) = 0 + (1-0)*1/(2+1)     = 1/3
        // v(b) = 1/3 + (1-1/3)*1/(1+1) = 1/3 + 1/3 = 2/3
        // v(c) = 2/3 + (1-2/3)*1/(0+1) = 1
        let nodes = label(&[(steps(&["a", "b", "c"]), true)]);
        assert_eq!(nodes.len(), 3);
        check(&nodes, "a", 1.0 / 3.0, 2);
        check(&nodes, "a b", 2.0 / 3.0, 1);
        check(&nodes, "a b c", 1.0, 0);
        assert_eq!(nodes[2].path, vec![0, 0, 0]);
        assert_eq!(nodes[2].end, Some(true));
    }

    #[test]
    fn branching_with_mixed_leaves() {
        // root ─ a ─ b ─ c  (correct)
        //      │   │   └ f  (wrong)
        //      │   └ d      (wrong)
        //      └ e          (wrong)
        // m before inheritance: c 0, b 1, a 2, root 3; d, e, f infinite.
        // Inherited: f <- b (1), d <- a (2), e <- root (3).
        // v(a) = 0 + 1*(+1)/3                    = 1/3
        // v(e) = max(0 + 1*(-1)/4, 0)            = 0     (clamped)
        // v(b) = 1/3 + (2/3)*(+1)/2              = 2/3
        // v(d) = 1/3 + (2/3)*(-1)/3 = 3/9 - 2/9  = 1/9
        // v(c) = 2/3 + (1/3)*(+1)/1              = 1
        // v(f) = 2/3 + (1/3)*(-1)/2 = 4/6 - 1/6  = 1/2
        let nodes = label(&[
            (steps(&["a", "b", "c"]), true),
            (steps(&["a", "d"]), false),
            (steps(&["e"]), false),
            (steps(&["a", "b", "f"]), false),
        ]);
        assert_eq!(nodes.len(), 6);
        check(&nodes, "a", 1.0 / 3.0, 2);
        check(&nodes, "e", 0.0, 3);
        check(&nodes, "a b", 2.0 / 3.0, 1);
        check(&nodes, "a d", 1.0 / 9.0, 2);
        check(&nodes, "a b c", 1.0, 0);
        check(&nodes, "a b f", 0.5, 1);
        let f = nodes
            .iter()
            .find(|n| n.text == "a b f")
            .map(|n| n.path.clone());
        assert_eq!(f, Some(vec![0, 0, 1]));
    }

    #[test]
    fn deep_wrong_branch_inherits_from_nearest_finite_ancestor() {
        // root ─ a ─ b ─ c ─ d  (correct)
        //              └ x ─ y  (wrong)
        // m: d 0, c 1, b 2, a 3. x and y are infinite; both take b's 2 (y's nearest
        // ancestor with a finite m is b, through x).
        // v(a) = 1/4
        // v(b) = 1/4 + (3/4)/3                   = 1/2
        // v(x) = 1/2 + (1/2)*(-1)/3 = 1/2 - 1/6  = 1/3
        // v(y) = 1/3 + (2/3)*(-1)/3 = 3/9 - 2/9  = 1/9
        // (Were y's m left infinite its w would be 0 and v(y) 1/3.)
        let nodes = label(&[
            (steps(&["a", "b", "c", "d"]), true),
            (steps(&["a", "b", "x", "y"]), false),
        ]);
        check(&nodes, "a", 0.25, 3);
        check(&nodes, "a b", 0.5, 2);
        check(&nodes, "a b x", 1.0 / 3.0, 2);
        check(&nodes, "a b x y", 1.0 / 9.0, 2);
        check(&nodes, "a b c d", 1.0, 0);
    }

    #[test]
    fn all_wrong_contributes_nothing() {
        let nodes = label(&[(steps(&["a", "b"]), false), (steps(&["c"]), false)]);
        assert!(nodes.is_empty());
        assert!(label(&[]).is_empty());
        // Step-less solutions end at the root and are ignored.
        assert!(label(&[(Vec::new(), true)]).is_empty());
    }

    #[test]
    fn identical_prefixes_share_nodes() {
        // Two copies of one path and a sibling: a, a b, a c.
        // m: b 0, a 1, root 2. v(a) = 1/2; v(b) = 1/2 + (1/2)/1 = 1;
        // c wrong, inherits a's 1: v(c) = 1/2 + (1/2)*(-1)/2 = 1/4.
        let nodes = label(&[
            (steps(&["a", "b"]), true),
            (steps(&["a", "b"]), true),
            (steps(&["a", "c"]), false),
        ]);
        assert_eq!(nodes.len(), 3);
        check(&nodes, "a", 0.5, 1);
        check(&nodes, "a b", 1.0, 0);
        check(&nodes, "a c", 0.25, 1);
    }

    #[test]
    fn correct_end_that_is_also_an_inner_node() {
        // [a, b] correct and [a, b, c] wrong: b is a correct end with a child.
        // m: b 0 (a correct end, whatever is below), a 1; c infinite, inherits b's 0.
        // v(a) = 1/2; v(b) = 1/2 + (1/2)/1 = 1
        // v(c) = 1 + (1-1)*(-1)/1 = 1   (nothing is left to lose below a correct end)
        let nodes = label(&[(steps(&["a", "b", "c"]), false), (steps(&["a", "b"]), true)]);
        check(&nodes, "a", 0.5, 1);
        check(&nodes, "a b", 1.0, 0);
        check(&nodes, "a b c", 1.0, 0);
        assert_eq!(value_end(&nodes, "a b"), Some(true));
    }

    #[test]
    fn wrong_end_that_is_also_an_inner_node() {
        // [a] wrong and [a, b] correct: a is an incorrect end valued by its child.
        // m: b 0, a 1, root 2. v(a) = 1/2, v(b) = 1.
        let nodes = label(&[(steps(&["a"]), false), (steps(&["a", "b"]), true)]);
        check(&nodes, "a", 0.5, 1);
        check(&nodes, "a b", 1.0, 0);
        assert_eq!(value_end(&nodes, "a"), Some(false));
        assert!(nodes[0].reaches_correct);
    }

    #[test]
    fn conflicting_verdicts_on_one_end_count_as_correct() {
        let nodes = label(&[(steps(&["a"]), false), (steps(&["a"]), true)]);
        check(&nodes, "a", 1.0, 0);
    }

    fn value_end(nodes: &[LabelledNode], text: &str) -> Option<bool> {
        nodes.iter().find(|n| n.text == text).and_then(|n| n.end)
    }

    #[test]
    fn path_strings() {
        let nodes = label(&[(steps(&["a", "b"]), true), (steps(&["a", "c"]), true)]);
        let paths: Vec<String> = nodes.iter().map(LabelledNode::path_string).collect();
        assert_eq!(paths, ["0", "0.0", "0.1"]);
    }
}
