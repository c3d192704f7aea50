//! Question kinds: how each plants a scene that makes its question answerable (with
//! near-miss distractor objects), the question text, and the four choices.
//!
//! Planting fixes the answer *distribution* (counts spread over a range, comparison
//! outcomes equally likely, ...) so that no answer value is a free guess; the answer
//! itself is always re-derived by [`evaluate`] from the finished scene.
use super::prng::Prng;
use super::scene::{
    evaluate, Answer, Attribute, Colour, Comparison, Direction, Extreme, Filter, Object, Query,
    Reference, Scene, Shape, Size,
};
use super::Difficulty;
use serde::{Deserialize, Serialize};

/// A question template. Each has a fixed number of reasoning steps (the number of
/// `Step k:` sentences in its rationale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// "How many red shapes are in the image?" (2 steps)
    CountAttribute,
    /// "How many red circles are in the image?" (3 steps)
    CountAnd,
    /// "How many shapes are red or squares (or both)?" (4 steps)
    CountOr,
    /// "What colour is the shape directly to the left of the blue square?" (2 steps)
    Relate,
    /// "What shape is directly above the shape directly to the left of the red star?" (3 steps)
    RelateTwoHop,
    /// "How many shapes are to the left of the green triangle?" (3 steps)
    CountDirection,
    /// "How many red shapes are to the left of the green triangle?" (4 steps)
    CountDirectionFiltered,
    /// "What colour is the largest triangle?" (2 steps)
    ExtremeSize,
    /// "Which colour has the most shapes?" (2 steps)
    MostColour,
    /// "Which colour has the most circles?" (3 steps)
    MostColourOfShape,
    /// "Are there more red shapes than blue shapes?" (3 steps)
    CompareColours,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::CountAttribute,
        Kind::CountAnd,
        Kind::CountOr,
        Kind::Relate,
        Kind::RelateTwoHop,
        Kind::CountDirection,
        Kind::CountDirectionFiltered,
        Kind::ExtremeSize,
        Kind::MostColour,
        Kind::MostColourOfShape,
        Kind::CompareColours,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::CountAttribute => "count_attribute",
            Kind::CountAnd => "count_and",
            Kind::CountOr => "count_or",
            Kind::Relate => "relate",
            Kind::RelateTwoHop => "relate_two_hop",
            Kind::CountDirection => "count_direction",
            Kind::CountDirectionFiltered => "count_direction_filtered",
            Kind::ExtremeSize => "extreme_size",
            Kind::MostColour => "most_colour",
            Kind::MostColourOfShape => "most_colour_of_shape",
            Kind::CompareColours => "compare_colours",
        }
    }

    /// Reasoning steps in the reference rationale.
    pub fn steps(self) -> usize {
        match self {
            Kind::CountAttribute | Kind::Relate | Kind::ExtremeSize | Kind::MostColour => 2,
            Kind::CountAnd
            | Kind::RelateTwoHop
            | Kind::CountDirection
            | Kind::MostColourOfShape
            | Kind::CompareColours => 3,
            Kind::CountOr | Kind::CountDirectionFiltered => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    shape: Shape,
    colour: Colour,
    size: Size,
}

type Cell = (u32, u32);

/// Places objects on free lattice cells. Every failure is `None`; the caller
/// re-plans with fresh randomness.
struct Builder<'a> {
    rng: &'a mut Prng,
    canvas: u32,
    grid: u32,
    large: i32,
    small: i32,
    jitter: i32,
    objects: Vec<Object>,
}

impl<'a> Builder<'a> {
    fn new(rng: &'a mut Prng, canvas: u32, grid: u32) -> Self {
        let cell = canvas as f64 / grid as f64;
        // Radii and jitter as fractions of a cell keep every shape inside its cell
        // (largest extent 1.15 r) and rows/columns visually separate at any canvas size.
        Builder {
            rng,
            canvas,
            grid,
            large: (cell * 0.36).floor() as i32,
            small: (cell * 0.22).floor() as i32,
            jitter: (cell * 0.05).floor() as i32,
            objects: Vec::new(),
        }
    }

    fn free(&self, (r, c): Cell) -> bool {
        r < self.grid && c < self.grid && !self.objects.iter().any(|o| (o.row, o.col) == (r, c))
    }

    fn offset(&self, (r, c): Cell, d: Direction) -> Option<Cell> {
        let (dr, dc) = d.step();
        let (r, c) = (r as i64 + dr, c as i64 + dc);
        let g = self.grid as i64;
        ((0..g).contains(&r) && (0..g).contains(&c)).then_some((r as u32, c as u32))
    }

    fn cells_where(&self, pred: impl Fn(Cell) -> bool) -> Vec<Cell> {
        (0..self.grid)
            .flat_map(|r| (0..self.grid).map(move |c| (r, c)))
            .filter(|&cell| self.free(cell) && pred(cell))
            .collect()
    }

    fn random_cell(&mut self, pred: impl Fn(Cell) -> bool) -> Option<Cell> {
        let cells = self.cells_where(pred);
        self.rng.choose(&cells)
    }

    fn random_spec(&mut self) -> Spec {
        let shape = self.rng.choose(&Shape::ALL).unwrap_or(Shape::Circle);
        let colour = self.rng.choose(&Colour::ALL).unwrap_or(Colour::Red);
        let size = if self.rng.chance(1, 2) {
            Size::Large
        } else {
            Size::Small
        };
        Spec {
            shape,
            colour,
            size,
        }
    }

    /// A random spec satisfying `pred` (by rejection; every predicate used admits a
    /// good share of the 60 specs, so 500 draws never run out in practice).
    fn spec_where(&mut self, pred: impl Fn(&Spec) -> bool) -> Option<Spec> {
        (0..500).map(|_| self.random_spec()).find(|s| pred(s))
    }

    fn place(&mut self, spec: Spec, cell: Cell) -> Option<()> {
        if !self.free(cell) {
            return None;
        }
        let cell_px = self.canvas as f64 / self.grid as f64;
        let centre = |i: u32| ((i as f64 + 0.5) * cell_px).floor() as i32;
        let span = 2 * self.jitter as usize;
        let jx = self.rng.below(span + 1) as i32 - self.jitter;
        let jy = self.rng.below(span + 1) as i32 - self.jitter;
        self.objects.push(Object {
            shape: spec.shape,
            colour: spec.colour,
            size: spec.size,
            row: cell.0,
            col: cell.1,
            x: centre(cell.1) + jx,
            y: centre(cell.0) + jy,
            radius: match spec.size {
                Size::Large => self.large,
                Size::Small => self.small,
            },
        });
        Some(())
    }

    /// Places `spec` on a random free cell satisfying `cell_ok`.
    fn put(&mut self, spec: Spec, cell_ok: impl Fn(Cell) -> bool) -> Option<Cell> {
        let cell = self.random_cell(cell_ok)?;
        self.place(spec, cell)?;
        Some(cell)
    }

    /// `count` random objects satisfying `spec_ok`, on cells satisfying `cell_ok`.
    fn fill(
        &mut self,
        count: usize,
        spec_ok: impl Fn(&Spec) -> bool,
        cell_ok: impl Fn(Cell) -> bool,
    ) -> Option<()> {
        for _ in 0..count {
            let spec = self.spec_where(&spec_ok)?;
            self.put(spec, &cell_ok)?;
        }
        Some(())
    }

    fn finish(mut self) -> Scene {
        self.objects.sort_by_key(|o| (o.row, o.col));
        Scene {
            canvas: self.canvas,
            grid: self.grid,
            objects: self.objects,
        }
    }
}

fn any_cell(_: Cell) -> bool {
    true
}

fn other<T: Copy + PartialEq>(rng: &mut Prng, all: &[T], not: T) -> T {
    let rest: Vec<T> = all.iter().copied().filter(|&x| x != not).collect();
    rng.choose(&rest).unwrap_or(not)
}

fn is_ref(s: &Spec, r: &Reference) -> bool {
    s.colour == r.colour && s.shape == r.shape
}

fn attr_differs(s: &Spec, a: Attribute, colour: Colour, shape: Shape) -> bool {
    match a {
        Attribute::Colour => s.colour != colour,
        Attribute::Shape => s.shape != shape,
    }
}

fn random_attribute(rng: &mut Prng) -> Attribute {
    if rng.chance(1, 2) {
        Attribute::Colour
    } else {
        Attribute::Shape
    }
}

/// Plants a scene for `kind` and returns it with its query, once the query is
/// answerable there.
pub(crate) fn plan(
    kind: Kind,
    difficulty: Difficulty,
    canvas: u32,
    rng: &mut Prng,
) -> Option<(Scene, Query, Answer)> {
    let (lo, hi) = difficulty.objects();
    let n = rng.range(lo, hi);
    let hard = difficulty == Difficulty::Hard;
    let mut b = Builder::new(rng, canvas, difficulty.grid());
    let query = match kind {
        Kind::CountAttribute => count_attribute(&mut b, n)?,
        Kind::CountAnd => count_and(&mut b, n, if hard { 4 } else { 3 })?,
        Kind::CountOr => count_or(&mut b, n)?,
        Kind::Relate => relate(&mut b, n, false)?,
        Kind::RelateTwoHop => relate(&mut b, n, true)?,
        Kind::CountDirection => count_direction(&mut b, n, false)?,
        Kind::CountDirectionFiltered => count_direction(&mut b, n, true)?,
        Kind::ExtremeSize => extreme_size(&mut b, n, if hard { 4 } else { 3 })?,
        Kind::MostColour => most_colour(&mut b, n, false)?,
        Kind::MostColourOfShape => most_colour(&mut b, n, true)?,
        Kind::CompareColours => compare(&mut b, n, if hard { 5 } else { 4 })?,
    };
    if b.objects.len() != n {
        return None;
    }
    let scene = b.finish();
    scene.check().ok()?;
    let answer = evaluate(&scene, &query).ok()?;
    Some((scene, query, answer))
}

fn count_attribute(b: &mut Builder, n: usize) -> Option<Query> {
    let filter = if b.rng.chance(1, 2) {
        Filter::Colour(b.rng.choose(&Colour::ALL)?)
    } else {
        Filter::Shape(b.rng.choose(&Shape::ALL)?)
    };
    let k = b.rng.range(1, 3.min(n - 1));
    b.fill(k, |s| filter.admits(s.colour, s.shape), any_cell)?;
    b.fill(n - k, |s| !filter.admits(s.colour, s.shape), any_cell)?;
    Some(Query::Count { filter })
}

fn count_and(b: &mut Builder, n: usize, kmax: usize) -> Option<Query> {
    let (c, s) = (b.rng.choose(&Colour::ALL)?, b.rng.choose(&Shape::ALL)?);
    let filter = Filter::Both(c, s);
    let k = b.rng.range(0, kmax.min(n - 1));
    b.fill(k, |x| x.colour == c && x.shape == s, any_cell)?;
    // Near misses (right colour or right shape) are what make this two filters
    // rather than one.
    let near = b.rng.range(1, 2).min(n - k);
    for _ in 0..near {
        if b.rng.chance(1, 2) {
            b.fill(1, |x| x.colour == c && x.shape != s, any_cell)?;
        } else {
            b.fill(1, |x| x.colour != c && x.shape == s, any_cell)?;
        }
    }
    b.fill(
        n - k - near,
        |x| !filter.admits(x.colour, x.shape),
        any_cell,
    )?;
    Some(Query::Count { filter })
}

fn count_or(b: &mut Builder, n: usize) -> Option<Query> {
    let (c, s) = (b.rng.choose(&Colour::ALL)?, b.rng.choose(&Shape::ALL)?);
    let k = b.rng.range(1, 5.min(n - 2));
    for _ in 0..k {
        match b.rng.below(3) {
            0 => b.fill(1, |x| x.colour == c && x.shape == s, any_cell)?,
            1 => b.fill(1, |x| x.colour == c && x.shape != s, any_cell)?,
            _ => b.fill(1, |x| x.colour != c && x.shape == s, any_cell)?,
        }
    }
    b.fill(n - k, |x| x.colour != c && x.shape != s, any_cell)?;
    Some(Query::Count {
        filter: Filter::Either(c, s),
    })
}

fn relate(b: &mut Builder, n: usize, two_hop: bool) -> Option<Query> {
    let ref_spec = b.random_spec();
    let reference = Reference {
        colour: ref_spec.colour,
        shape: ref_spec.shape,
    };
    let first = b.rng.choose(&Direction::ALL)?;
    let mut path = vec![first];
    if two_hop {
        // A perpendicular second hop never leads back to the reference.
        let turns: Vec<Direction> = Direction::ALL
            .into_iter()
            .filter(|d| d.is_horizontal() != first.is_horizontal())
            .collect();
        path.push(b.rng.choose(&turns)?);
    }
    let walk = |b: &Builder, start: Cell| -> Option<Vec<Cell>> {
        let mut cells = vec![start];
        for &d in &path {
            cells.push(b.offset(*cells.last()?, d)?);
        }
        Some(cells)
    };
    let starts = b.cells_where(|c| walk(b, c).is_some());
    let start = b.rng.choose(&starts)?;
    let cells = walk(b, start)?;
    b.place(ref_spec, start)?;
    let attribute = random_attribute(b.rng);
    let mut target = ref_spec;
    for (i, &cell) in cells.iter().enumerate().skip(1) {
        let last = i == cells.len() - 1;
        // The answer never repeats the reference's own colour or shape, so copying
        // a word from the question cannot score.
        target = b.spec_where(|s| {
            !is_ref(s, &reference)
                && (!last || attr_differs(s, attribute, reference.colour, reference.shape))
        })?;
        b.place(target, cell)?;
    }
    // A decoy where a misread direction would land: the opposite neighbour for one
    // hop, the second hop taken from the reference for two.
    let decoy_dir = if two_hop { path[1] } else { first.opposite() };
    if let Some(cell) = b.offset(start, decoy_dir).filter(|&c| b.free(c)) {
        if b.rng.chance(2, 3) {
            let decoy = b.spec_where(|s| {
                !is_ref(s, &reference) && attr_differs(s, attribute, target.colour, target.shape)
            })?;
            b.place(decoy, cell)?;
        }
    }
    let rest = n.checked_sub(b.objects.len())?;
    b.fill(rest, |s| !is_ref(s, &reference), any_cell)?;
    Some(Query::Relate {
        reference,
        path,
        attribute,
    })
}

fn count_direction(b: &mut Builder, n: usize, filtered: bool) -> Option<Query> {
    let ref_spec = b.random_spec();
    let reference = Reference {
        colour: ref_spec.colour,
        shape: ref_spec.shape,
    };
    let direction = b.rng.choose(&Direction::ALL)?;
    let (filter, colour) = if filtered {
        let c = other(b.rng, &Colour::ALL, reference.colour);
        (Filter::Colour(c), Some(c))
    } else {
        (Filter::Any, None)
    };
    let k = b.rng.range(0, if filtered { 3 } else { 4 });
    // Same-colour-but-elsewhere and here-but-other-colour near misses for the
    // filtered form.
    let misses_here = if filtered { b.rng.range(1, 2) } else { 0 };
    let ahead = k + misses_here;
    let behind = n.checked_sub(1 + ahead)?;
    let g = b.grid;
    let count_beyond = |cell: Cell, d: Direction| -> usize {
        let line = if d.is_horizontal() { cell.1 } else { cell.0 };
        let lines = match d {
            Direction::Left | Direction::Above => line,
            Direction::Right | Direction::Below => g - 1 - line,
        };
        (lines * g) as usize
    };
    let starts = b.cells_where(|c| {
        count_beyond(c, direction) >= ahead && count_beyond(c, direction.opposite()) >= behind
    });
    let start = b.rng.choose(&starts)?;
    b.place(ref_spec, start)?;
    // Cells strictly beyond the reference's row or column; its own line stays
    // empty (see `Unanswerable::OnTheLine`).
    let in_dir = |d: Direction| {
        move |(row, col): Cell| match d {
            Direction::Left => col < start.1,
            Direction::Right => col > start.1,
            Direction::Above => row < start.0,
            Direction::Below => row > start.0,
        }
    };
    let matches = move |s: &Spec| filter.admits(s.colour, s.shape) && !is_ref(s, &reference);
    b.fill(k, matches, in_dir(direction))?;
    b.fill(
        misses_here,
        |s| colour.is_some_and(|c| s.colour != c) && !is_ref(s, &reference),
        in_dir(direction),
    )?;
    let mut behind_left = behind;
    if let Some(c) = colour {
        if behind_left > 0 && b.rng.chance(2, 3) {
            b.fill(
                1,
                |s| s.colour == c && !is_ref(s, &reference),
                in_dir(direction.opposite()),
            )?;
            behind_left -= 1;
        }
    }
    b.fill(
        behind_left,
        |s| !is_ref(s, &reference),
        in_dir(direction.opposite()),
    )?;
    Some(Query::CountDirection {
        reference,
        direction,
        filter,
    })
}

fn extreme_size(b: &mut Builder, n: usize, max_group: usize) -> Option<Query> {
    let by_shape = b.rng.chance(1, 2);
    let (group, attribute) = if by_shape {
        (Filter::Shape(b.rng.choose(&Shape::ALL)?), Attribute::Colour)
    } else {
        (
            Filter::Colour(b.rng.choose(&Colour::ALL)?),
            Attribute::Shape,
        )
    };
    let extreme = if b.rng.chance(1, 2) {
        Extreme::Largest
    } else {
        Extreme::Smallest
    };
    let (win_size, other_size) = match extreme {
        Extreme::Largest => (Size::Large, Size::Small),
        Extreme::Smallest => (Size::Small, Size::Large),
    };
    let m = b.rng.range(2, max_group.min(n - 1));
    let in_group = move |s: &Spec| group.admits(s.colour, s.shape);
    let winner = b.spec_where(|s| in_group(s) && s.size == win_size)?;
    b.put(winner, any_cell)?;
    // The other members differ in the asked attribute, so only size decides.
    b.fill(
        m - 1,
        |s| {
            in_group(s)
                && s.size == other_size
                && attr_differs(s, attribute, winner.colour, winner.shape)
        },
        any_cell,
    )?;
    b.fill(n - m, |s| !in_group(s), any_cell)?;
    Some(Query::ExtremeSize {
        group,
        extreme,
        attribute,
    })
}

fn most_colour(b: &mut Builder, n: usize, of_shape: bool) -> Option<Query> {
    let (among, members) = if of_shape {
        (
            Filter::Shape(b.rng.choose(&Shape::ALL)?),
            b.rng.range(3, 6.min(n - 1)),
        )
    } else {
        (Filter::Any, n)
    };
    // The winner's count t must leave the rest spread over five other colours at
    // most t - 1 each.
    let tops: Vec<usize> = (2..members)
        .filter(|&t| members - t <= 5 * (t - 1))
        .collect();
    let top = b.rng.choose(&tops)?;
    let winner = b.rng.choose(&Colour::ALL)?;
    let mut counts: Vec<(Colour, usize)> = vec![(winner, top)];
    let mut rest = members - top;
    // Usually a close runner-up, so that counting (not a glance) decides.
    if b.rng.chance(2, 3) && rest > 0 {
        let runner = other(b.rng, &Colour::ALL, winner);
        let k = (top - 1).min(rest);
        counts.push((runner, k));
        rest -= k;
    }
    for _ in 0..rest {
        let open: Vec<Colour> = Colour::ALL
            .into_iter()
            .filter(|&c| {
                c != winner
                    && counts
                        .iter()
                        .find(|(x, _)| *x == c)
                        .is_none_or(|&(_, k)| k < top - 1)
            })
            .collect();
        let c = b.rng.choose(&open)?;
        match counts.iter_mut().find(|(x, _)| *x == c) {
            Some(entry) => entry.1 += 1,
            None => counts.push((c, 1)),
        }
    }
    for (c, k) in counts {
        b.fill(
            k,
            |s| s.colour == c && among.admits(s.colour, s.shape),
            any_cell,
        )?;
    }
    if let Filter::Shape(shape) = among {
        // Other shapes often crowd one other colour, so the most common colour
        // overall is not the answer.
        let decoy = other(b.rng, &Colour::ALL, winner);
        let crowd = b.rng.chance(1, 2);
        b.fill(
            n - members,
            |s| s.shape != shape && (!crowd || s.colour == decoy),
            any_cell,
        )?;
    }
    Some(Query::MostColour { among })
}

fn compare(b: &mut Builder, n: usize, max_each: usize) -> Option<Query> {
    let first = b.rng.choose(&Colour::ALL)?;
    let second = other(b.rng, &Colour::ALL, first);
    let outcome = [Comparison::More, Comparison::Fewer, Comparison::Equal][b.rng.below(3)];
    let (a, c) = (0..200)
        .map(|_| (b.rng.range(1, max_each), b.rng.range(1, max_each)))
        .find(|&(a, c)| {
            a + c <= n
                && match outcome {
                    Comparison::More => a > c,
                    Comparison::Fewer => a < c,
                    Comparison::Equal => a == c,
                }
        })?;
    b.fill(a, |s| s.colour == first, any_cell)?;
    b.fill(c, |s| s.colour == second, any_cell)?;
    b.fill(
        n - a - c,
        |s| s.colour != first && s.colour != second,
        any_cell,
    )?;
    Some(Query::Compare { first, second })
}

/// The question as asked.
pub(crate) fn question_text(q: &Query) -> String {
    match q {
        Query::Count {
            filter: Filter::Either(c, s),
        } => format!(
            "How many shapes are {} or {} (or both)?",
            c.name(),
            s.plural()
        ),
        Query::Count { filter } => format!("How many {} are in the image?", filter.plural()),
        Query::Relate {
            reference,
            path,
            attribute,
        } => {
            // The last hop is named first: "directly above the shape directly to the
            // left of the red star".
            let mut chain = format!("the {reference}");
            for (i, d) in path.iter().enumerate() {
                chain = if i + 1 == path.len() {
                    format!("{} {chain}", d.directly())
                } else {
                    format!("the shape {} {chain}", d.directly())
                };
            }
            match attribute {
                Attribute::Colour => format!("What colour is the shape {chain}?"),
                Attribute::Shape => format!("What shape is {chain}?"),
            }
        }
        Query::CountDirection {
            reference,
            direction,
            filter,
        } => format!(
            "How many {} are {} the {reference}?",
            filter.plural(),
            direction.relation()
        ),
        Query::ExtremeSize {
            group,
            extreme,
            attribute,
        } => {
            let adj = match extreme {
                Extreme::Largest => "largest",
                Extreme::Smallest => "smallest",
            };
            match (attribute, group) {
                (Attribute::Colour, Filter::Shape(s)) => {
                    format!("What colour is the {adj} {}?", s.name())
                }
                (_, Filter::Colour(c)) => {
                    format!("What shape is the {adj} {} object?", c.name())
                }
                _ => format!("What is the {adj} object?"),
            }
        }
        Query::MostColour { among } => format!("Which colour has the most {}?", among.plural()),
        Query::Compare { first, second } => format!(
            "Are there more {} shapes than {} shapes?",
            first.name(),
            second.name()
        ),
    }
}

/// The four statements offered for a comparison; the last is never true (the
/// generator keeps both colours present), a plausible-sounding distractor.
fn comparison_choices(first: Colour, second: Colour) -> [(Option<Comparison>, String); 4] {
    [
        (
            Some(Comparison::More),
            format!("yes, there are more {} shapes", first.name()),
        ),
        (
            Some(Comparison::Fewer),
            format!("no, there are more {} shapes", second.name()),
        ),
        (
            Some(Comparison::Equal),
            "no, the numbers are equal".to_string(),
        ),
        (None, format!("no, there are no {} shapes", first.name())),
    ]
}

/// The choice text of an answer.
pub(crate) fn answer_text(q: &Query, a: &Answer) -> String {
    match (a, q) {
        (Answer::Count(k), _) => k.to_string(),
        (Answer::Colour(c), _) => c.name().to_string(),
        (Answer::Shape(s), _) => s.name().to_string(),
        (Answer::Comparison(cmp), Query::Compare { first, second }) => {
            comparison_choices(*first, *second)
                .into_iter()
                .find(|(c, _)| *c == Some(*cmp))
                .map(|(_, t)| t)
                .unwrap_or_default()
        }
        (Answer::Comparison(_), _) => String::new(),
    }
}

/// Colours (shapes) in the scene first, then the rest: a distractor the model can
/// see in the image is harder to rule out than an absent one.
fn scene_first<T: Copy + PartialEq>(
    rng: &mut Prng,
    all: &[T],
    answer: T,
    present: impl Fn(T) -> bool,
) -> Vec<T> {
    let mut seen: Vec<T> = all
        .iter()
        .copied()
        .filter(|&x| x != answer && present(x))
        .collect();
    let mut absent: Vec<T> = all
        .iter()
        .copied()
        .filter(|&x| x != answer && !present(x))
        .collect();
    rng.shuffle(&mut seen);
    rng.shuffle(&mut absent);
    seen.extend(absent);
    seen
}

/// Four distinct choices with the answer at `letter` (0..4).
pub(crate) fn choices(
    scene: &Scene,
    q: &Query,
    a: &Answer,
    letter: usize,
    rng: &mut Prng,
) -> Vec<String> {
    let mut distractors: Vec<String> = match *a {
        Answer::Count(k) => {
            // A run of four consecutive counts containing the answer at a random
            // offset, so neither the smallest nor the middle value is a tell.
            let start = rng.range(k.saturating_sub(3), k);
            (start..start + 4)
                .filter(|&x| x != k)
                .map(|x| x.to_string())
                .collect()
        }
        Answer::Colour(c) => scene_first(rng, &Colour::ALL, c, |x| {
            scene.objects.iter().any(|o| o.colour == x)
        })
        .into_iter()
        .map(|x| x.name().to_string())
        .collect(),
        Answer::Shape(s) => scene_first(rng, &Shape::ALL, s, |x| {
            scene.objects.iter().any(|o| o.shape == x)
        })
        .into_iter()
        .map(|x| x.name().to_string())
        .collect(),
        Answer::Comparison(cmp) => match q {
            Query::Compare { first, second } => comparison_choices(*first, *second)
                .into_iter()
                .filter(|(c, _)| *c != Some(cmp))
                .map(|(_, t)| t)
                .collect(),
            _ => Vec::new(),
        },
    };
    distractors.truncate(3);
    rng.shuffle(&mut distractors);
    let at = letter.min(distractors.len());
    distractors.insert(at, answer_text(q, a));
    distractors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_plans_at_every_difficulty() {
        for d in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
            for kind in Kind::ALL {
                let mut rng = Prng::derive(11, 0, kind as u64);
                let planned = (0..50).find_map(|_| plan(kind, d, 336, &mut rng));
                assert!(planned.is_some(), "{kind:?} at {d:?} never planned");
            }
        }
    }

    #[test]
    fn relate_questions_read_naturally() {
        let q = Query::Relate {
            reference: Reference {
                colour: Colour::Red,
                shape: Shape::Star,
            },
            path: vec![Direction::Left, Direction::Above],
            attribute: Attribute::Colour,
        };
        assert_eq!(
            question_text(&q),
            "What colour is the shape directly above the shape directly to the left of the red star?"
        );
        let q = Query::Relate {
            reference: Reference {
                colour: Colour::Blue,
                shape: Shape::Square,
            },
            path: vec![Direction::Below],
            attribute: Attribute::Shape,
        };
        assert_eq!(
            question_text(&q),
            "What shape is directly below the blue square?"
        );
    }

    #[test]
    fn count_choices_are_a_run_around_the_answer() {
        let scene = Scene {
            canvas: 336,
            grid: 4,
            objects: vec![],
        };
        let q = Query::Count {
            filter: Filter::Any,
        };
        let mut rng = Prng::derive(3, 0, 0);
        for k in 0..6 {
            for letter in 0..4 {
                let c = choices(&scene, &q, &Answer::Count(k), letter, &mut rng);
                assert_eq!(c[letter], k.to_string());
                let mut nums: Vec<usize> = c.iter().map(|x| x.parse().unwrap()).collect();
                nums.sort();
                assert_eq!(nums[3] - nums[0], 3, "{c:?}");
            }
        }
    }
}
