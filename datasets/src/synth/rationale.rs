//! Grounded step-by-step rationales.
//!
//! Every step is exactly one sentence ending in "." with no other sentence
//! punctuation inside, so the beam search's sentence-level step split recovers the
//! steps one to one. Steps cite objects by size, colour, shape and location.
use super::scene::{
    location, Answer, Attribute, Colour, Comparison, Direction, Extreme, Filter, Object, Query,
    Reference, Scene,
};

/// The reference rationale (`Step k: ...` sentences) and the answer statement.
pub(crate) struct Explanation {
    pub steps: Vec<String>,
    pub conclusion: String,
}

impl Explanation {
    /// The three A-OKVQA rationales: the full chain, then two shorter paraphrases
    /// (first step plus conclusion, conclusion alone). All end with the letter.
    pub fn rationales(&self, letter: usize) -> Vec<String> {
        let tag = format!("Final Answer: ({})", letter_of(letter));
        let chain: Vec<String> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("Step {}: {s}", i + 1))
            .collect();
        let first = self.steps.first().cloned().unwrap_or_default();
        vec![
            format!("{} {tag}", chain.join(" ")),
            format!("{first} {} {tag}", self.conclusion),
            format!("{} {tag}", self.conclusion),
        ]
    }
}

pub(crate) fn letter_of(i: usize) -> char {
    (b'A' + (i as u8 % 26)) as char
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Which attributes a description may leave out because the context names them.
#[derive(Clone, Copy)]
struct Known {
    colour: bool,
    shape: bool,
}

const NOTHING: Known = Known {
    colour: false,
    shape: false,
};
const COLOUR: Known = Known {
    colour: true,
    shape: false,
};
const SHAPE: Known = Known {
    colour: false,
    shape: true,
};

/// "large red circle", "large circle" (colour known), "large red one" (shape known).
fn noun(o: &Object, k: Known) -> String {
    let mut words = vec![o.size.name()];
    if !k.colour {
        words.push(o.colour.name());
    }
    words.push(if k.shape { "one" } else { o.shape.name() });
    words.join(" ")
}

fn a(o: &Object, k: Known, canvas: u32) -> String {
    format!("a {} {}", noun(o, k), location(o, canvas))
}

fn the(o: &Object, k: Known, canvas: u32) -> String {
    format!("the {} {}", noun(o, k), location(o, canvas))
}

/// "The red shapes are a large circle at the top left and ...", with singular and
/// empty forms.
fn group(singular: &str, plural: &str, members: &[&Object], k: Known, canvas: u32) -> String {
    match members {
        [] => format!("There are no {plural}."),
        [one] => format!("The only {singular} is {}.", a(one, k, canvas)),
        _ => {
            let items: Vec<String> = members.iter().map(|o| a(o, k, canvas)).collect();
            format!("The {plural} are {}.", join(&items))
        }
    }
}

fn members<'s>(scene: &'s Scene, f: &Filter) -> Vec<&'s Object> {
    scene.objects.iter().filter(|o| f.matches(o)).collect()
}

fn find<'s>(scene: &'s Scene, r: &Reference) -> Option<&'s Object> {
    scene
        .objects
        .iter()
        .find(|o| o.colour == r.colour && o.shape == r.shape)
}

fn tally(counts: &[(Colour, usize)]) -> String {
    let mut sorted = counts.to_vec();
    sorted.sort_by_key(|&(c, n)| (std::cmp::Reverse(n), c));
    let items: Vec<String> = sorted
        .iter()
        .map(|(c, n)| format!("{n} {}", c.name()))
        .collect();
    join(&items)
}

fn read(o: &Object, a: Attribute) -> String {
    match a {
        Attribute::Colour => format!("its colour is {}", o.colour.name()),
        Attribute::Shape => format!("it is a {}", o.shape.name()),
    }
}

fn hop_phrase(d: Direction, anchor: &str) -> String {
    match d {
        Direction::Left => format!("to the left of {anchor} in the same row"),
        Direction::Right => format!("to the right of {anchor} in the same row"),
        Direction::Above => format!("above {anchor} in the same column"),
        Direction::Below => format!("below {anchor} in the same column"),
    }
}

/// Explains `answer` to `q` in `scene`; `answer` must come from `evaluate`.
pub(crate) fn explain(scene: &Scene, q: &Query, answer: &Answer) -> Explanation {
    let cv = scene.canvas;
    let mut steps = Vec::new();
    let conclusion;
    match q {
        Query::Count { filter } => {
            let k = members(scene, filter).len();
            match *filter {
                Filter::Both(c, s) => {
                    let coloured = members(scene, &Filter::Colour(c));
                    let sing = format!("{} shape", c.name());
                    let plural = format!("{} shapes", c.name());
                    steps.push(group(&sing, &plural, &coloured, COLOUR, cv));
                    let hits: Vec<&Object> =
                        coloured.iter().copied().filter(|o| o.shape == s).collect();
                    steps.push(match (coloured.len(), hits.as_slice()) {
                        (0, _) => format!("So no shape can be a {} {}.", c.name(), s.name()),
                        (1, []) => format!("That shape is not a {}.", s.name()),
                        (1, [_]) => format!("That shape is a {}.", s.name()),
                        (_, []) => format!("None of them is a {}.", s.name()),
                        (_, [one]) => format!(
                            "Of these, only the {} {} is a {}.",
                            one.size.name(),
                            location(one, cv),
                            s.name()
                        ),
                        (_, many) => {
                            let items: Vec<String> = many
                                .iter()
                                .map(|o| format!("the {} one {}", o.size.name(), location(o, cv)))
                                .collect();
                            format!("Of these, the {} are {}.", s.plural(), join(&items))
                        }
                    });
                }
                Filter::Either(c, s) => {
                    let coloured = members(scene, &Filter::Colour(c));
                    let shaped = members(scene, &Filter::Shape(s));
                    let both: Vec<&Object> =
                        coloured.iter().copied().filter(|o| o.shape == s).collect();
                    let sing = format!("{} shape", c.name());
                    let plural = format!("{} shapes", c.name());
                    steps.push(group(&sing, &plural, &coloured, COLOUR, cv));
                    steps.push(group(s.name(), s.plural(), &shaped, SHAPE, cv));
                    let red_square = format!("{} {}", c.name(), s.name());
                    steps.push(match both.as_slice() {
                        [] => format!("No shape is both {} and a {}.", c.name(), s.name()),
                        [one] => format!(
                            "The {} {red_square} {} is in both groups, so it is counted once.",
                            one.size.name(),
                            location(one, cv)
                        ),
                        many => {
                            let places: Vec<String> =
                                many.iter().map(|o| location(o, cv).to_string()).collect();
                            format!(
                                "The {} {} {} are in both groups, so each is counted once.",
                                c.name(),
                                s.plural(),
                                join(&places)
                            )
                        }
                    });
                    steps.push(format!(
                        "So the number of {} is {} + {} - {} = {k}.",
                        filter.plural(),
                        coloured.len(),
                        shaped.len(),
                        both.len()
                    ));
                }
                Filter::Colour(c) => {
                    let sing = format!("{} shape", c.name());
                    steps.push(group(
                        &sing,
                        &filter.plural(),
                        &members(scene, filter),
                        COLOUR,
                        cv,
                    ));
                }
                Filter::Shape(s) => {
                    steps.push(group(
                        s.name(),
                        s.plural(),
                        &members(scene, filter),
                        SHAPE,
                        cv,
                    ));
                }
                Filter::Any => {
                    steps.push(group(
                        "shape",
                        "shapes",
                        &members(scene, filter),
                        NOTHING,
                        cv,
                    ));
                }
            }
            conclusion = format!("The number of {} is {k}.", filter.plural());
            match filter {
                Filter::Either(..) => {}
                Filter::Both(..) => {
                    steps.push(format!("So the number of {} is {k}.", filter.plural()))
                }
                _ => steps.push(format!(
                    "Counting them, the number of {} is {k}.",
                    filter.plural()
                )),
            }
        }
        Query::Relate {
            reference,
            path,
            attribute,
        } => {
            let mut at = find(scene, reference);
            if let Some(r) = at {
                steps.push(format!(
                    "The {reference} is the {} one {}.",
                    r.size.name(),
                    location(r, cv)
                ));
            }
            let mut anchor = format!("the {reference}");
            for (i, &d) in path.iter().enumerate() {
                let Some(from) = at else { break };
                let next = scene.neighbour(from, d);
                let Some(o) = next else { break };
                let mut s = format!(
                    "The nearest shape {} is {}",
                    hop_phrase(d, &anchor),
                    a(o, NOTHING, cv)
                );
                if i + 1 == path.len() {
                    s.push_str(&format!(", so {}", read(o, *attribute)));
                }
                s.push('.');
                steps.push(s);
                anchor = format!("that {} {}", o.colour.name(), o.shape.name());
                at = Some(o);
            }
            let mut phrase = format!("the {reference}");
            for (i, d) in path.iter().enumerate() {
                phrase = if i + 1 == path.len() {
                    format!("The shape {} {phrase}", d.directly())
                } else {
                    format!("the shape {} {phrase}", d.directly())
                };
            }
            conclusion = match answer {
                Answer::Colour(c) => format!("{phrase} is {}.", c.name()),
                Answer::Shape(s) => format!("{phrase} is a {}.", s.name()),
                _ => format!("{phrase} is unknown."),
            };
        }
        Query::CountDirection {
            reference,
            direction,
            filter,
        } => {
            let k = match answer {
                Answer::Count(k) => *k,
                _ => 0,
            };
            if let Some(r) = find(scene, reference) {
                steps.push(format!(
                    "The {reference} is the {} one {}.",
                    r.size.name(),
                    location(r, cv)
                ));
                let beyond: Vec<&Object> = scene
                    .objects
                    .iter()
                    .filter(|o| Scene::beyond(r, o, *direction))
                    .collect();
                let rel = direction.relation();
                steps.push(match beyond.as_slice() {
                    [] => format!("There are no shapes {rel} it."),
                    [one] => format!("The only shape {rel} it is {}.", a(one, NOTHING, cv)),
                    many => {
                        let items: Vec<String> = many.iter().map(|o| a(o, NOTHING, cv)).collect();
                        format!("The shapes {rel} it are {}.", join(&items))
                    }
                });
                if let Filter::Colour(c) = filter {
                    let hits: Vec<&Object> =
                        beyond.iter().copied().filter(|o| o.colour == *c).collect();
                    let c = c.name();
                    steps.push(match (beyond.len(), hits.as_slice()) {
                        (0, _) => format!("So there are no {c} shapes there either."),
                        (_, []) => format!("None of them is {c}."),
                        (_, [one]) => format!(
                            "Of these, only the {} {} is {c}.",
                            noun(one, COLOUR),
                            location(one, cv)
                        ),
                        (_, many) => {
                            let items: Vec<String> =
                                many.iter().map(|o| the(o, COLOUR, cv)).collect();
                            format!("Of these, the {c} ones are {}.", join(&items))
                        }
                    });
                }
            }
            let what = format!(
                "{} {} the {reference}",
                filter.plural(),
                direction.relation()
            );
            steps.push(format!("So the number of {what} is {k}."));
            conclusion = format!("The number of {what} is {k}.");
        }
        Query::ExtremeSize {
            group: g,
            extreme,
            attribute,
        } => {
            let ms = members(scene, g);
            let (known, sing, plural) = match g {
                Filter::Shape(s) => (SHAPE, s.name().to_string(), s.plural().to_string()),
                Filter::Colour(c) => (
                    COLOUR,
                    format!("{} shape", c.name()),
                    format!("{} shapes", c.name()),
                ),
                _ => (NOTHING, "shape".into(), "shapes".into()),
            };
            steps.push(group(&sing, &plural, &ms, known, cv));
            let adj = match extreme {
                Extreme::Largest => "largest",
                Extreme::Smallest => "smallest",
            };
            let winner = ms.iter().find(|o| match answer {
                Answer::Colour(c) => o.colour == *c,
                Answer::Shape(s) => o.shape == *s,
                _ => false,
            });
            if let Some(w) = winner {
                steps.push(format!(
                    "{} is the {adj}, so {}.",
                    cap(&the(w, known, cv)),
                    read(w, *attribute)
                ));
            }
            conclusion = match (answer, g) {
                (Answer::Colour(c), Filter::Shape(s)) => {
                    format!("The {adj} {} is {}.", s.name(), c.name())
                }
                (Answer::Shape(s), Filter::Colour(c)) => {
                    format!("The {adj} {} object is a {}.", c.name(), s.name())
                }
                _ => format!("The {adj} object is identified."),
            };
        }
        Query::MostColour { among } => {
            let counts = scene.colour_counts(among);
            let what = among.plural();
            if let Filter::Shape(s) = among {
                steps.push(group(
                    s.name(),
                    s.plural(),
                    &members(scene, among),
                    SHAPE,
                    cv,
                ));
                steps.push(format!(
                    "Counting the {} by colour gives {}.",
                    s.plural(),
                    tally(&counts)
                ));
            } else {
                steps.push(format!(
                    "Counting the shapes by colour gives {}.",
                    tally(&counts)
                ));
            }
            let (win, top) = counts
                .iter()
                .copied()
                .max_by_key(|&(_, n)| n)
                .unwrap_or((Colour::Red, 0));
            let win = match answer {
                Answer::Colour(c) => *c,
                _ => win,
            };
            steps.push(format!(
                "{} has the most {what}, with {top}.",
                cap(win.name())
            ));
            conclusion = format!("{} has the most {what}.", cap(win.name()));
        }
        Query::Compare { first, second } => {
            let mut totals = Vec::new();
            for c in [first, second] {
                let ms = members(scene, &Filter::Colour(*c));
                let sing = format!("{} shape", c.name());
                let plural = format!("{} shapes", c.name());
                let listed = group(&sing, &plural, &ms, COLOUR, cv);
                let listed = listed.trim_end_matches('.');
                steps.push(format!("{listed}, which makes {}.", ms.len()));
                totals.push(ms.len());
            }
            let (x, y) = (totals[0], totals[1]);
            let (f, s) = (first.name(), second.name());
            let verdict = match answer {
                Answer::Comparison(Comparison::More) => {
                    format!("there are more {f} shapes than {s} shapes")
                }
                Answer::Comparison(Comparison::Fewer) => {
                    format!("there are fewer {f} shapes than {s} shapes")
                }
                _ => format!("there are as many {f} shapes as {s} shapes"),
            };
            steps.push(match x.cmp(&y) {
                std::cmp::Ordering::Greater => format!("Since {x} is more than {y}, {verdict}."),
                std::cmp::Ordering::Less => format!("Since {x} is less than {y}, {verdict}."),
                std::cmp::Ordering::Equal => format!("Since both counts are {x}, {verdict}."),
            });
            conclusion = format!("{}.", cap(&verdict));
        }
    }
    Explanation { steps, conclusion }
}
