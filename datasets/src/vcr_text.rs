//! Turns VCR token lists into plain sentences. A token is a word or a list of indices
//! into the image's `objects`; every referenced index is rendered (the reference code
//! kept only the first, silently dropping the other people in "[0,1] are talking").
use serde::Deserialize;

/// One token of a VCR question, answer or rationale.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Token {
    Word(String),
    Objects(Vec<usize>),
}

/// The VCR metadata file next to each image; only what naming needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Metadata {
    /// `[x1, y1, x2, y2, score]` per object, in `objects` order.
    pub boxes: Vec<Vec<f64>>,
    pub width: f64,
    pub height: f64,
}

/// How each object of one image is named: `person1`, `person2`, `car1`, ... numbered
/// per class in `objects` order, persons with their horizontal position when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectNames {
    names: Vec<String>,
}

impl ObjectNames {
    pub fn new(objects: &[String], metadata: Option<&Metadata>) -> Self {
        let mut names = Vec::with_capacity(objects.len());
        for (i, class) in objects.iter().enumerate() {
            let number = objects[..i].iter().filter(|o| *o == class).count() + 1;
            let position = (class == "person")
                .then(|| metadata.and_then(|m| position(m, i)))
                .flatten();
            names.push(match position {
                Some(p) => format!("{class}{number} ({p})"),
                None => format!("{class}{number}"),
            });
        }
        ObjectNames { names }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// "person1", "person1 and person2", "person1, person2 and car1".
    pub fn reference(&self, indices: &[usize]) -> Result<String, String> {
        let mut parts = Vec::with_capacity(indices.len());
        for &i in indices {
            let name = self.names.get(i).ok_or_else(|| {
                format!(
                    "object reference {i} out of range of {} objects",
                    self.names.len()
                )
            })?;
            parts.push(name.as_str());
        }
        match parts.as_slice() {
            [] => Err("empty object reference".to_string()),
            [one] => Ok(one.to_string()),
            [init @ .., last] => Ok(format!("{} and {last}", init.join(", "))),
        }
    }

    /// Renders a token list as one sentence.
    pub fn render(&self, tokens: &[Token]) -> Result<String, String> {
        let mut pieces = Vec::with_capacity(tokens.len());
        for token in tokens {
            pieces.push(match token {
                Token::Word(w) => w.clone(),
                Token::Objects(ids) => self.reference(ids)?,
            });
        }
        Ok(join_words(&pieces))
    }
}

/// Which third of the image the object's box centre falls in.
fn position(meta: &Metadata, index: usize) -> Option<&'static str> {
    let b = meta.boxes.get(index)?;
    let (x1, x2) = (*b.first()?, *b.get(2)?);
    let usable = meta.width.is_finite() && meta.width > 0.0 && x1.is_finite() && x2.is_finite();
    if !usable {
        return None;
    }
    let centre = (x1 + x2) / 2.0 / meta.width;
    Some(if centre < 1.0 / 3.0 {
        "on the left"
    } else if centre < 2.0 / 3.0 {
        "in the middle"
    } else {
        "on the right"
    })
}

/// Joins tokenized words with spaces, then reattaches what the tokenizer split off:
/// punctuation, clitics ("'s", "n't") and the "' s" form VCR sometimes has.
pub fn join_words<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    let mut previous = "";
    for word in words {
        let word = word.as_ref().trim();
        if word.is_empty() {
            continue;
        }
        let attach = out.is_empty()
            || is_closing(word)
            || word.starts_with(['\'', '\u{2019}'])
            || word == "n't"
            || (is_apostrophe(previous) && is_clitic_tail(word))
            || previous == "("
            || previous == "[";
        if !attach {
            out.push(' ');
        }
        out.push_str(word);
        previous = word;
    }
    out
}

fn is_closing(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| matches!(c, ',' | '.' | '?' | '!' | ';' | ':' | ')' | ']' | '%'))
}

fn is_apostrophe(word: &str) -> bool {
    word == "'" || word == "\u{2019}"
}

fn is_clitic_tail(word: &str) -> bool {
    matches!(word, "s" | "t" | "re" | "ve" | "ll" | "d" | "m")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str]) -> Vec<Token> {
        ws.iter().map(|w| Token::Word(w.to_string())).collect()
    }

    fn objects(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_per_class_in_object_order() {
        let names = ObjectNames::new(&objects(&["person", "car", "person", "car"]), None);
        assert_eq!(names.reference(&[2]).as_deref(), Ok("person2"));
        assert_eq!(names.reference(&[3]).as_deref(), Ok("car2"));
        assert_eq!(
            names.reference(&[0, 1, 2]).as_deref(),
            Ok("person1, car1 and person2")
        );
    }

    #[test]
    fn positions_come_from_box_centres() {
        let meta = Metadata {
            boxes: vec![
                vec![0.0, 0.0, 100.0, 50.0, 0.9],
                vec![400.0, 0.0, 500.0, 50.0, 0.9],
                vec![800.0, 0.0, 900.0, 50.0, 0.9],
                vec![0.0, 0.0, 10.0, 10.0, 0.9],
            ],
            width: 900.0,
            height: 600.0,
        };
        let names = ObjectNames::new(
            &objects(&["person", "person", "person", "dog"]),
            Some(&meta),
        );
        assert_eq!(
            names.reference(&[0, 1, 2, 3]).as_deref(),
            Ok("person1 (on the left), person2 (in the middle), person3 (on the right) and dog1")
        );
    }

    #[test]
    fn out_of_range_and_empty_references_are_errors() {
        let names = ObjectNames::new(&objects(&["person"]), None);
        assert!(names
            .reference(&[1])
            .is_err_and(|e| e.contains("out of range")));
        assert!(names.reference(&[]).is_err());
    }

    #[test]
    fn spacing_is_fixed_before_punctuation_and_clitics() {
        let names = ObjectNames::new(&objects(&["person", "person"]), None);
        let mut tokens = words(&["Why", "is"]);
        tokens.push(Token::Objects(vec![0]));
        tokens.extend(words(&["smiling", "?"]));
        assert_eq!(
            names.render(&tokens).as_deref(),
            Ok("Why is person1 smiling?")
        );

        let mut tokens = vec![Token::Objects(vec![1])];
        tokens.extend(words(&[
            "'", "s", "hat", "is", "n't", "red", ",", "it", "'s", "blue", ".",
        ]));
        assert_eq!(
            names.render(&tokens).as_deref(),
            Ok("person2's hat isn't red, it's blue.")
        );
    }
}
