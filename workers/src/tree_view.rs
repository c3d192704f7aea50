//! A question's search tree for people: indented text for the terminal and an SVG
//! picture (steps in boxes, the value model's score as colour, the best verified path
//! highlighted). Pure functions of the stored tree.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use tsst_actors::store::TreeView;
use tsst_messages::{FinishReason, Node, NodeId, Verdict};

/// What became of a node in the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Root,
    /// Kept into a frontier and expanded.
    Expanded,
    /// A finished solution.
    Finished,
    /// Not kept (or the search ended before it was expanded).
    Pruned,
}

impl Fate {
    fn name(self) -> &'static str {
        match self {
            Fate::Root => "root",
            Fate::Expanded => "kept",
            Fate::Finished => "finished",
            Fate::Pruned => "pruned",
        }
    }
}

/// The tree as parent -> children, with each node's fate and the highlighted path.
pub struct Shape<'a> {
    nodes: HashMap<NodeId, &'a Node>,
    children: BTreeMap<NodeId, Vec<NodeId>>,
    root: NodeId,
    verdicts: &'a HashMap<NodeId, Verdict>,
    /// From the root to the chosen solution: the best-valued correct one, else the
    /// best-valued finished one.
    chosen: Vec<NodeId>,
}

impl<'a> Shape<'a> {
    pub fn new(tree: &'a TreeView) -> Option<Shape<'a>> {
        let root = tree.nodes.iter().find(|n| n.parent.is_none())?.id;
        let nodes: HashMap<NodeId, &Node> = tree.nodes.iter().map(|n| (n.id, n)).collect();
        let mut children: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for n in &tree.nodes {
            if let Some(p) = n.parent {
                children.entry(p).or_default().push(n.id);
            }
        }
        // Siblings in the order they were drawn.
        for kids in children.values_mut() {
            kids.sort_by_key(|id| (nodes[id].round, nodes[id].sample, *id));
        }
        let value = |id: &NodeId| nodes.get(id).and_then(|n| n.value).unwrap_or(f64::MIN);
        let best = |ids: &mut dyn Iterator<Item = &NodeId>| {
            ids.max_by(|a, b| value(a).total_cmp(&value(b))).copied()
        };
        let correct = best(
            &mut tree
                .finished
                .iter()
                .filter(|id| tree.verdicts.get(id).is_some_and(|v| v.correct)),
        );
        let target = correct.or_else(|| best(&mut tree.finished.iter()));
        let mut chosen = Vec::new();
        let mut at = target;
        while let Some(id) = at {
            chosen.push(id);
            at = nodes.get(&id).and_then(|n| n.parent);
        }
        chosen.reverse();
        Some(Shape {
            nodes,
            children,
            root,
            verdicts: &tree.verdicts,
            chosen,
        })
    }

    pub fn fate(&self, id: NodeId) -> Fate {
        let n = self.nodes[&id];
        if n.parent.is_none() {
            Fate::Root
        } else if n.finished.is_some() {
            Fate::Finished
        } else if self.children.contains_key(&id) {
            Fate::Expanded
        } else {
            Fate::Pruned
        }
    }

    fn kids(&self, id: NodeId) -> &[NodeId] {
        self.children.get(&id).map_or(&[], Vec::as_slice)
    }

    /// What a node's line says after its step: value, fate, finish, verdict.
    fn tags(&self, id: NodeId) -> String {
        let n = self.nodes[&id];
        let mut tags = vec![format!("r{}", n.round)];
        if let Some(v) = n.value {
            tags.push(format!("v={v:.2}"));
        }
        tags.push(self.fate(id).name().to_owned());
        if let Some(f) = n.finished {
            tags.push(
                match f {
                    FinishReason::Answer => "answer",
                    FinishReason::Exhausted => "exhausted",
                    FinishReason::Length => "length",
                    FinishReason::Eos => "eos",
                }
                .to_owned(),
            );
        }
        if let Some(v) = self.verdicts.get(&id) {
            let letter = v.letter.map(|l| format!(" ({l})")).unwrap_or_default();
            tags.push(format!(
                "{}{letter}",
                if v.correct { "correct" } else { "wrong" }
            ));
        }
        if self.chosen.contains(&id) {
            tags.push("*".to_owned());
        }
        tags.join(" ")
    }

    /// The indented tree for the terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut stack: Vec<(NodeId, String, bool)> = self
            .kids(self.root)
            .iter()
            .rev()
            .enumerate()
            .map(|(i, id)| (*id, String::new(), i == 0))
            .collect();
        while let Some((id, indent, last)) = stack.pop() {
            let n = self.nodes[&id];
            let _ = writeln!(
                out,
                "{indent}{} [{}] {}",
                if last { "└─" } else { "├─" },
                self.tags(id),
                one_line(&n.step, 100)
            );
            let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
            for (i, kid) in self.kids(id).iter().rev().enumerate() {
                stack.push((*kid, deeper.clone(), i == 0));
            }
        }
        out
    }

    /// The tree as an SVG picture: depth left to right, one row per leaf.
    pub fn svg(&self, title: &str) -> String {
        const COL: f64 = 300.0;
        const ROW: f64 = 46.0;
        const BOX_W: f64 = 270.0;
        const BOX_H: f64 = 36.0;
        const TOP: f64 = 50.0;
        // Rows: leaves in order; an inner node sits at the middle of its children.
        let mut row: HashMap<NodeId, f64> = HashMap::new();
        let mut next_leaf = 0.0;
        self.place(self.root, &mut row, &mut next_leaf);
        let depth = self.nodes.values().map(|n| n.depth).max().unwrap_or(0);
        let width = 40.0 + COL * f64::from(depth + 1);
        let height = TOP + ROW * next_leaf.max(1.0) + 20.0;
        let at = |id: &NodeId| {
            let n = self.nodes[id];
            (20.0 + COL * f64::from(n.depth), TOP + ROW * row[id])
        };
        let mut svg = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">
<title>{}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="24" font-size="14" font-weight="bold">{}</text>
<text x="20" y="40" fill="#555">fill: value (red 0, green 1, grey unscored); thick blue: chosen path; dashed: pruned; ✓/✗ verdict</text>
"##,
            xml(title),
            xml(title)
        );
        for (parent, kids) in &self.children {
            let (px, py) = at(parent);
            for kid in kids {
                let (kx, ky) = at(kid);
                let on_path = self.chosen.contains(parent) && self.chosen.contains(kid);
                let _ = writeln!(
                    svg,
                    r#"<path d="M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="{}" stroke-width="{}"/>"#,
                    px + BOX_W,
                    py + BOX_H / 2.0,
                    px + BOX_W + 15.0,
                    py + BOX_H / 2.0,
                    kx - 15.0,
                    ky + BOX_H / 2.0,
                    kx,
                    ky + BOX_H / 2.0,
                    if on_path { "#1f5fbf" } else { "#999" },
                    if on_path { 3 } else { 1 }
                );
            }
        }
        let mut ids: Vec<&NodeId> = self.nodes.keys().collect();
        ids.sort();
        for id in ids {
            let n = self.nodes[id];
            let (x, y) = at(id);
            let fate = self.fate(*id);
            let fill = match (fate, n.value) {
                (Fate::Root, _) => "#eef".to_owned(),
                (_, Some(v)) => value_colour(v),
                (_, None) => "#ddd".to_owned(),
            };
            let on_path = self.chosen.contains(id);
            let stroke = if on_path { "#1f5fbf" } else { "#444" };
            let dash = if fate == Fate::Pruned {
                r#" stroke-dasharray="4 3" opacity="0.6""#
            } else {
                ""
            };
            let verdict = match self.verdicts.get(id) {
                Some(v) if v.correct => " ✓",
                Some(_) => " ✗",
                None => "",
            };
            let label = if fate == Fate::Root {
                "question".to_owned()
            } else {
                one_line(&n.step, 46)
            };
            let info = match n.value {
                Some(v) => format!("r{} v={v:.2} {}{verdict}", n.round, fate.name()),
                None => format!("r{} {}{verdict}", n.round, fate.name()),
            };
            let _ = writeln!(
                svg,
                r##"<g><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="5" fill="{fill}" stroke="{stroke}" stroke-width="{}"{dash}/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="#333">{}</text></g>"##,
                xml(&format!("{}\n{}", n.step, self.tags(*id))),
                if on_path { 3 } else { 1 },
                x + 6.0,
                y + 15.0,
                xml(&label),
                x + 6.0,
                y + 29.0,
                xml(&info)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Assigns rows: leaves take the next free row, a parent the middle of its kids.
    fn place(&self, id: NodeId, row: &mut HashMap<NodeId, f64>, next: &mut f64) -> f64 {
        let kids = self.kids(id);
        let r = if kids.is_empty() {
            *next += 1.0;
            *next - 1.0
        } else {
            let rows: Vec<f64> = kids.iter().map(|k| self.place(*k, row, next)).collect();
            (rows[0] + rows[rows.len() - 1]) / 2.0
        };
        row.insert(id, r);
        r
    }
}

/// Red (0) through yellow to green (1).
fn value_colour(v: f64) -> String {
    let v = v.clamp(0.0, 1.0);
    let (r, g) = if v < 0.5 {
        (255.0, 510.0 * v)
    } else {
        (510.0 * (1.0 - v), 255.0)
    };
    // Pastel: mixed halfway with white, so the text stays readable.
    let mix = |c: f64| ((c + 255.0) / 2.0).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(r), mix(g), mix(110.0))
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_colours() {
        assert_eq!(xml("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(value_colour(0.0), "#ff80b7");
        assert_eq!(value_colour(1.0), "#80ffb7");
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
