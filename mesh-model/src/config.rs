//! Parsing of the local config file: YAML documents of Kubernetes-shaped objects.
//!
//! Errors name the file, the line and column, the document's kind and name and the
//! field path, so an operator can fix the file without guessing. A file that fails
//! to parse or validate is refused as a whole.
use std::{collections::HashMap, path::Path};

use serde::de::DeserializeOwned;

use crate::model::{Decoder, Kind, Object, Objects, TypeMeta};

mod error;
mod validate;

pub use error::Error;

pub fn load(path: &Path) -> Result<Objects, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// One `---`-separated document and the 1-based line it starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn decode<T: DeserializeOwned>(
    path: &str,
    start: usize,
    what: &str,
    doc: &str,
) -> Result<T, Error> {
    serde_yaml::from_str(doc).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (start + l.line() - 1, l.column()))
            .unwrap_or((start, 0));
        let mut message = e.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        Error::Syntax {
            path: path.to_owned(),
            line,
            column,
            what: what.to_owned(),
            message,
        }
    })
}

pub fn parse(path: &str, text: &str) -> Result<Objects, Error> {
    let objects = parse_unchecked(path, text, &mut Docs::default())?;
    validate::objects(path, &objects)?;
    Ok(objects)
}

/// The checks of the objects as a set (names and addresses used twice, ...), for
/// objects that did not come from YAML text (the control plane's stream).
pub fn validate_objects(origin: &str, o: &Objects) -> Result<(), Error> {
    validate::objects(origin, o)
}

/// Parses and compiles `text`: everything a config source checks before it uses a
/// config (tests and tools; sources compile against the state in force).
pub fn check(path: &str, text: &str) -> Result<crate::state::State, Error> {
    let objects = parse(path, text)?;
    crate::state::State::compile(1, std::sync::Arc::new(objects), None)
        .map_err(|e| Error::invalid(path, e))
}

/// Documents already parsed, by their text: a reload parses only the documents
/// that changed (a 6,000-object file with one edit parses one document).
#[derive(Default)]
pub struct Docs {
    parsed: HashMap<String, Object>,
    /// Documents used by the latest load; what stays for the next one.
    seen: HashMap<String, Object>,
}

impl Docs {
    fn get_or_parse(
        &mut self,
        doc: String,
        parse: impl FnOnce(&str) -> Result<Object, Error>,
    ) -> Result<Object, Error> {
        let o = match self
            .parsed
            .remove(&doc)
            .or_else(|| self.seen.get(&doc).cloned())
        {
            Some(o) => o,
            None => parse(&doc)?,
        };
        self.seen.insert(doc, o.clone());
        Ok(o)
    }

    /// Forgets documents the latest load did not use.
    fn finish(&mut self) {
        self.parsed = std::mem::take(&mut self.seen);
    }
}

/// Every `*.yaml`/`*.yml` file of a directory (sorted by name) as one config:
/// parsed file by file (errors name the file), validated together.
pub fn load_dir(dir: &Path) -> Result<Objects, Error> {
    load_dir_with(dir, &mut Docs::default())
}

/// As `load_dir`, parsing only documents `docs` has not seen.
pub fn load_dir_with(dir: &Path, docs: &mut Docs) -> Result<Objects, Error> {
    let read_err = |source| Error::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut all = Objects::default();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| Error::Read {
            path: f.display().to_string(),
            source,
        })?;
        all.extend(parse_unchecked(&f.display().to_string(), &text, docs)?);
    }
    docs.finish();
    validate::objects(&dir.display().to_string(), &all)?;
    Ok(all)
}

/// One YAML document, decoded as the type its kind names.
struct Yaml<'a> {
    path: &'a str,
    start: usize,
    kind: Kind,
    doc: &'a str,
}

impl Decoder<Error> for Yaml<'_> {
    fn decode<T: DeserializeOwned>(self) -> Result<T, Error> {
        decode(self.path, self.start, self.kind.as_str(), self.doc)
    }
}

/// One document starting at line `start`, as an object of the kind it names.
fn parse_doc(path: &str, start: usize, doc: &str) -> Result<Object, Error> {
    let meta: TypeMeta = decode(path, start, "document", doc)?;
    let kind = meta.kind.ok_or(Error::MissingKind {
        path: path.to_owned(),
        line: start,
    })?;
    let kind: Kind = kind.parse().map_err(|source| Error::UnknownKind {
        path: path.to_owned(),
        line: start,
        source,
    })?;
    let doc = Yaml {
        path,
        start,
        kind,
        doc,
    };
    Object::decode(kind, doc)
}

fn parse_unchecked(path: &str, text: &str, docs: &mut Docs) -> Result<Objects, Error> {
    let mut objects = Objects::default();
    for (start, doc) in documents(text) {
        objects.push(docs.get_or_parse(doc, |d| parse_doc(path, start, d))?);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests;
