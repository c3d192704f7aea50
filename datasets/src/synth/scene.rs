//! The scene model: shapes on a grid, and the reference semantics of every question.
//!
//! Objects sit in distinct cells of a `grid x grid` lattice with a few pixels of
//! jitter. The lattice is what makes spatial questions unambiguous: "directly to the
//! left of X" is the nearest object in X's row on its left, and "to the left of X" is
//! every object in a column left of X's. Jitter is small enough that rows and columns
//! stay visually obvious (checked by [`Scene::check`]).
//!
//! [`evaluate`] is the single source of truth for answers: the generator plants a
//! scene for a question and then asks `evaluate` what the answer is, rejecting the
//! scene if the question turns out ambiguous.
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Star,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Star,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Star => "star",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
            Shape::Star => "stars",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Colour {
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// Saturated and far apart in hue, so JPEG compression and the CLIP
    /// preprocessing cannot blur one colour into another.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [214, 39, 40],
            Colour::Green => [44, 160, 44],
            Colour::Blue => [31, 83, 220],
            Colour::Yellow => [240, 200, 0],
            Colour::Purple => [140, 60, 190],
            Colour::Orange => [255, 127, 14],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Left,
    Right,
    Above,
    Below,
}

impl Direction {
    pub const ALL: [Direction; 4] = [
        Direction::Left,
        Direction::Right,
        Direction::Above,
        Direction::Below,
    ];

    /// Grid step `(d_row, d_col)`.
    pub fn step(self) -> (i64, i64) {
        match self {
            Direction::Left => (0, -1),
            Direction::Right => (0, 1),
            Direction::Above => (-1, 0),
            Direction::Below => (1, 0),
        }
    }

    pub fn is_horizontal(self) -> bool {
        matches!(self, Direction::Left | Direction::Right)
    }

    pub fn opposite(self) -> Direction {
        match self {
            Direction::Left => Direction::Right,
            Direction::Right => Direction::Left,
            Direction::Above => Direction::Below,
            Direction::Below => Direction::Above,
        }
    }

    /// "directly to the left of", as used in questions.
    pub fn directly(self) -> &'static str {
        match self {
            Direction::Left => "directly to the left of",
            Direction::Right => "directly to the right of",
            Direction::Above => "directly above",
            Direction::Below => "directly below",
        }
    }

    /// "to the left of", the half-plane reading.
    pub fn relation(self) -> &'static str {
        match self {
            Direction::Left => "to the left of",
            Direction::Right => "to the right of",
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }
}

/// One shape. Positions are integers so that the scene (and `synth_meta.json`) is
/// exact; the rasteriser works from these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    /// Grid cell, 0-based from the top left.
    pub row: u32,
    pub col: u32,
    /// Centre in pixels.
    pub x: i32,
    pub y: i32,
    /// Nominal radius in pixels (a circle's radius; other shapes are scaled to a
    /// similar area).
    pub radius: i32,
}

impl Object {
    pub fn describe(&self, canvas: u32) -> String {
        format!(
            "a {} {} {} {}",
            self.size.name(),
            self.colour.name(),
            self.shape.name(),
            location(self, canvas)
        )
    }
}

/// Where an object is, in words, from the 3x3 thirds of the canvas.
pub fn location(o: &Object, canvas: u32) -> &'static str {
    let third = |v: i32| -> usize {
        let v = v.max(0) as u64 * 3;
        (v / canvas.max(1) as u64).min(2) as usize
    };
    const WORDS: [[&str; 3]; 3] = [
        ["at the top left", "at the top", "at the top right"],
        ["on the left", "in the centre", "on the right"],
        ["at the bottom left", "at the bottom", "at the bottom right"],
    ];
    WORDS[third(o.y)][third(o.x)]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    /// Square canvas side in pixels.
    pub canvas: u32,
    /// Cells per side of the placement lattice.
    pub grid: u32,
    /// In reading order (row, then column).
    pub objects: Vec<Object>,
}

impl Scene {
    /// Structural invariants that make the questions visually unambiguous: one object
    /// per cell, everything on the canvas, no overlaps, and rows/columns separable by
    /// pixel position alone (objects in one row are closer vertically than half a
    /// cell, objects in different rows farther).
    pub fn check(&self) -> Result<(), String> {
        let cell = self.canvas as f64 / self.grid as f64;
        for (i, a) in self.objects.iter().enumerate() {
            if a.row >= self.grid || a.col >= self.grid {
                return Err(format!("object {i} outside the grid"));
            }
            let ext = (a.radius as f64 * 1.2).ceil() as i32;
            let c = self.canvas as i32;
            if a.x - ext < 0 || a.y - ext < 0 || a.x + ext > c || a.y + ext > c {
                return Err(format!("object {i} leaves the canvas"));
            }
            for (j, b) in self.objects.iter().enumerate().skip(i + 1) {
                if (a.row, a.col) == (b.row, b.col) {
                    return Err(format!("objects {i} and {j} share a cell"));
                }
                let (dx, dy) = ((a.x - b.x) as f64, (a.y - b.y) as f64);
                if (dx * dx + dy * dy).sqrt() <= 1.2 * (a.radius + b.radius) as f64 {
                    return Err(format!("objects {i} and {j} overlap"));
                }
                if (a.row == b.row) != (dy.abs() < cell / 2.0)
                    || (a.col == b.col) != (dx.abs() < cell / 2.0)
                {
                    return Err(format!("objects {i} and {j} blur a row or column"));
                }
            }
        }
        Ok(())
    }

    fn unique(&self, r: &Reference) -> Result<&Object, Unanswerable> {
        let mut found = self
            .objects
            .iter()
            .filter(|o| o.colour == r.colour && o.shape == r.shape);
        match (found.next(), found.next()) {
            (Some(o), None) => Ok(o),
            (None, _) => Err(Unanswerable::MissingReference),
            (Some(_), Some(_)) => Err(Unanswerable::AmbiguousReference),
        }
    }

    /// The nearest object in `from`'s row (or column) in direction `d`.
    pub fn neighbour(&self, from: &Object, d: Direction) -> Option<&Object> {
        let (dr, dc) = d.step();
        self.objects
            .iter()
            .filter(|o| {
                let (r, c) = (
                    o.row as i64 - from.row as i64,
                    o.col as i64 - from.col as i64,
                );
                if dr == 0 {
                    r == 0 && c.signum() == dc
                } else {
                    c == 0 && r.signum() == dr
                }
            })
            .min_by_key(|o| {
                (o.row as i64 - from.row as i64).abs() + (o.col as i64 - from.col as i64).abs()
            })
    }

    /// Whether `o` lies in the half-plane `d` of `from` (strictly beyond its row or
    /// column).
    pub fn beyond(from: &Object, o: &Object, d: Direction) -> bool {
        match d {
            Direction::Left => o.col < from.col,
            Direction::Right => o.col > from.col,
            Direction::Above => o.row < from.row,
            Direction::Below => o.row > from.row,
        }
    }

    fn shares_line(from: &Object, o: &Object, d: Direction) -> bool {
        if d.is_horizontal() {
            o.col == from.col
        } else {
            o.row == from.row
        }
    }

    pub fn colour_counts(&self, among: &Filter) -> Vec<(Colour, usize)> {
        Colour::ALL
            .iter()
            .map(|&c| {
                let n = self
                    .objects
                    .iter()
                    .filter(|o| among.matches(o) && o.colour == c)
                    .count();
                (c, n)
            })
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// Which objects a question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Any,
    Colour(Colour),
    Shape(Shape),
    /// Both attributes ("red circles").
    Both(Colour, Shape),
    /// Either attribute, inclusive ("red or squares").
    Either(Colour, Shape),
}

impl Filter {
    pub fn matches(&self, o: &Object) -> bool {
        self.admits(o.colour, o.shape)
    }

    pub fn admits(&self, colour: Colour, shape: Shape) -> bool {
        match *self {
            Filter::Any => true,
            Filter::Colour(c) => colour == c,
            Filter::Shape(s) => shape == s,
            Filter::Both(c, s) => colour == c && shape == s,
            Filter::Either(c, s) => colour == c || shape == s,
        }
    }

    /// Plural noun phrase: "red circles", "shapes that are red or squares".
    pub fn plural(&self) -> String {
        match *self {
            Filter::Any => "shapes".into(),
            Filter::Colour(c) => format!("{} shapes", c.name()),
            Filter::Shape(s) => s.plural().into(),
            Filter::Both(c, s) => format!("{} {}", c.name(), s.plural()),
            Filter::Either(c, s) => format!("shapes that are {} or {}", c.name(), s.plural()),
        }
    }
}

/// An object named by colour and shape; the generator guarantees it is unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub colour: Colour,
    pub shape: Shape,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.colour.name(), self.shape.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribute {
    Colour,
    Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extreme {
    Largest,
    Smallest,
}

/// A question as a small program over the scene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Query {
    /// How many objects match.
    Count { filter: Filter },
    /// Follow `path` from the reference, one nearest-neighbour hop per direction
    /// (the first hop is applied first), and read an attribute.
    Relate {
        reference: Reference,
        path: Vec<Direction>,
        attribute: Attribute,
    },
    /// How many objects matching `filter` lie beyond the reference in `direction`.
    CountDirection {
        reference: Reference,
        direction: Direction,
        filter: Filter,
    },
    /// The attribute of the single largest (smallest) member of `group`.
    ExtremeSize {
        group: Filter,
        extreme: Extreme,
        attribute: Attribute,
    },
    /// The colour with strictly the most members of `among`.
    MostColour { among: Filter },
    /// How the number of `first`-coloured objects compares with `second`-coloured.
    Compare { first: Colour, second: Colour },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    More,
    Fewer,
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Count(usize),
    Colour(Colour),
    Shape(Shape),
    Comparison(Comparison),
}

/// Why a question has no single right answer in a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswerable {
    #[error("the reference object is missing")]
    MissingReference,
    #[error("the reference object is not unique")]
    AmbiguousReference,
    #[error("no object in that direction")]
    NoNeighbour,
    #[error("an object shares the reference's row or column")]
    OnTheLine,
    #[error("the group has fewer than two members")]
    TooFew,
    #[error("a tie")]
    Tie,
}

fn read(o: &Object, a: Attribute) -> Answer {
    match a {
        Attribute::Colour => Answer::Colour(o.colour),
        Attribute::Shape => Answer::Shape(o.shape),
    }
}

/// The answer to `q` in `scene`, or why there is none.
pub fn evaluate(scene: &Scene, q: &Query) -> Result<Answer, Unanswerable> {
    match q {
        Query::Count { filter } => Ok(Answer::Count(
            scene.objects.iter().filter(|o| filter.matches(o)).count(),
        )),
        Query::Relate {
            reference,
            path,
            attribute,
        } => {
            let mut at = scene.unique(reference)?;
            for &d in path {
                at = scene.neighbour(at, d).ok_or(Unanswerable::NoNeighbour)?;
            }
            Ok(read(at, *attribute))
        }
        Query::CountDirection {
            reference,
            direction,
            filter,
        } => {
            let r = scene.unique(reference)?;
            // An object in the reference's own column is neither left nor right of it
            // to a human eye; the generator keeps that line clear.
            if scene
                .objects
                .iter()
                .any(|o| o != r && Scene::shares_line(r, o, *direction))
            {
                return Err(Unanswerable::OnTheLine);
            }
            Ok(Answer::Count(
                scene
                    .objects
                    .iter()
                    .filter(|o| Scene::beyond(r, o, *direction) && filter.matches(o))
                    .count(),
            ))
        }
        Query::ExtremeSize {
            group,
            extreme,
            attribute,
        } => {
            let members: Vec<&Object> = scene.objects.iter().filter(|o| group.matches(o)).collect();
            if members.len() < 2 {
                return Err(Unanswerable::TooFew);
            }
            let key = |o: &Object| match extreme {
                Extreme::Largest => o.radius,
                Extreme::Smallest => -o.radius,
            };
            let best = members.iter().map(|o| key(o)).max().unwrap_or(0);
            let mut top = members.iter().filter(|o| key(o) == best);
            match (top.next(), top.next()) {
                (Some(o), None) => Ok(read(o, *attribute)),
                _ => Err(Unanswerable::Tie),
            }
        }
        Query::MostColour { among } => {
            let counts = scene.colour_counts(among);
            let best = counts.iter().map(|&(_, n)| n).max().unwrap_or(0);
            let mut top = counts.iter().filter(|&&(_, n)| n == best);
            match (top.next(), top.next(), counts.len()) {
                (Some(&(c, _)), None, 2..) => Ok(Answer::Colour(c)),
                (_, _, 0 | 1) => Err(Unanswerable::TooFew),
                _ => Err(Unanswerable::Tie),
            }
        }
        Query::Compare { first, second } => {
            let count = |c: Colour| scene.objects.iter().filter(|o| o.colour == c).count();
            let (a, b) = (count(*first), count(*second));
            // "no, there are no red shapes" is always offered as a distractor, so it
            // must be false.
            if a == 0 || b == 0 {
                return Err(Unanswerable::TooFew);
            }
            Ok(Answer::Comparison(match a.cmp(&b) {
                std::cmp::Ordering::Greater => Comparison::More,
                std::cmp::Ordering::Less => Comparison::Fewer,
                std::cmp::Ordering::Equal => Comparison::Equal,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(shape: Shape, colour: Colour, size: Size, row: u32, col: u32) -> Object {
        let cell = 84;
        Object {
            shape,
            colour,
            size,
            row,
            col,
            x: col as i32 * cell + cell / 2,
            y: row as i32 * cell + cell / 2,
            radius: if size == Size::Large { 30 } else { 18 },
        }
    }

    fn scene(objects: Vec<Object>) -> Scene {
        Scene {
            canvas: 336,
            grid: 4,
            objects,
        }
    }

    #[test]
    fn neighbour_is_nearest_in_the_same_row() {
        use Colour::*;
        use Shape::*;
        let s = scene(vec![
            obj(Circle, Red, Size::Small, 1, 0),
            obj(Square, Green, Size::Large, 1, 1),
            obj(Star, Blue, Size::Large, 1, 3),
            obj(Diamond, Yellow, Size::Small, 0, 2),
        ]);
        s.check().unwrap();
        let q = |path: Vec<Direction>| Query::Relate {
            reference: Reference {
                colour: Blue,
                shape: Star,
            },
            path,
            attribute: Attribute::Colour,
        };
        assert_eq!(
            evaluate(&s, &q(vec![Direction::Left])),
            Ok(Answer::Colour(Green))
        );
        assert_eq!(
            evaluate(&s, &q(vec![Direction::Above])),
            Err(Unanswerable::NoNeighbour)
        );
        assert_eq!(
            evaluate(&s, &q(vec![Direction::Left, Direction::Left])),
            Ok(Answer::Colour(Red))
        );
    }

    #[test]
    fn count_direction_refuses_objects_on_the_line() {
        use Colour::*;
        use Shape::*;
        let mut s = scene(vec![
            obj(Circle, Red, Size::Small, 0, 0),
            obj(Square, Red, Size::Large, 3, 1),
            obj(Star, Blue, Size::Large, 1, 2),
        ]);
        let q = Query::CountDirection {
            reference: Reference {
                colour: Blue,
                shape: Star,
            },
            direction: Direction::Left,
            filter: Filter::Colour(Red),
        };
        assert_eq!(evaluate(&s, &q), Ok(Answer::Count(2)));
        s.objects.push(obj(Circle, Green, Size::Small, 3, 2));
        assert_eq!(evaluate(&s, &q), Err(Unanswerable::OnTheLine));
    }

    #[test]
    fn ties_are_unanswerable() {
        use Colour::*;
        use Shape::*;
        let s = scene(vec![
            obj(Circle, Red, Size::Large, 0, 0),
            obj(Circle, Blue, Size::Large, 0, 2),
            obj(Square, Blue, Size::Small, 2, 2),
        ]);
        let largest = Query::ExtremeSize {
            group: Filter::Shape(Circle),
            extreme: Extreme::Largest,
            attribute: Attribute::Colour,
        };
        assert_eq!(evaluate(&s, &largest), Err(Unanswerable::Tie));
        let most = Query::MostColour { among: Filter::Any };
        assert_eq!(evaluate(&s, &most), Ok(Answer::Colour(Blue)));
        let most_circles = Query::MostColour {
            among: Filter::Shape(Circle),
        };
        assert_eq!(evaluate(&s, &most_circles), Err(Unanswerable::Tie));
    }

    #[test]
    fn locations_follow_thirds() {
        let o = obj(Shape::Circle, Colour::Red, Size::Small, 0, 0);
        assert_eq!(location(&o, 336), "at the top left");
        let o = obj(Shape::Circle, Colour::Red, Size::Small, 3, 3);
        assert_eq!(location(&o, 336), "at the bottom right");
    }
}
