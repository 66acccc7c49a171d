//! Compiling one object: its name in errors, and the checks every field shares.
use std::time::Duration;

use http::header::HeaderName;
use regex::Regex;

use crate::model::{HeaderModifier, Objects, ValueMatch, ValueMatchType};

use super::types::*;
use crate::l7::duration;

pub(super) fn is_core(group: Option<&str>) -> bool {
    matches!(group, None | Some("") | Some("core"))
}

pub(super) struct Ctx<'a> {
    pub(super) kind: &'static str,
    pub(super) name: String,
    pub(super) objects: &'a Objects,
}

impl Ctx<'_> {
    pub(super) fn err(&self, message: String) -> BuildError {
        BuildError {
            kind: self.kind,
            name: self.name.clone(),
            message,
        }
    }
    pub(super) fn regex(&self, field: &str, pattern: &str) -> Result<Regex, BuildError> {
        Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            self.err(format!(
                "{field}: {pattern:?} is not a valid regular expression: {e}"
            ))
        })
    }
    pub(super) fn duration(
        &self,
        field: &str,
        s: &Option<String>,
    ) -> Result<Option<Duration>, BuildError> {
        s.as_deref()
            .map(|s| duration::parse(s).map_err(|e| self.err(format!("{field}: {e}"))))
            .transpose()
    }
    pub(super) fn cond(
        &self,
        field: &str,
        kind: ValueMatchType,
        value: &str,
    ) -> Result<Cond, BuildError> {
        Ok(match kind {
            ValueMatchType::Exact => Cond::Exact(value.to_owned()),
            ValueMatchType::RegularExpression => Cond::Regex(self.regex(field, value)?),
        })
    }
    pub(super) fn values(
        &self,
        field: &str,
        v: &[ValueMatch],
        header: bool,
    ) -> Result<Vec<(String, Cond)>, BuildError> {
        v.iter()
            .enumerate()
            .map(|(i, m)| {
                let name = if header {
                    m.name.to_ascii_lowercase()
                } else {
                    m.name.clone()
                };
                Ok((name, self.cond(&format!("{field}[{i}]"), m.kind, &m.value)?))
            })
            .collect()
    }
}

pub(super) fn headers(
    ctx: &Ctx<'_>,
    field: &str,
    v: &[ValueMatch],
) -> Result<Vec<(HeaderName, Cond)>, BuildError> {
    ctx.values(field, v, true)?
        .into_iter()
        .map(|(n, c)| {
            HeaderName::from_bytes(n.as_bytes())
                .map(|h| (h, c))
                .map_err(|_| ctx.err(format!("{field}: {n:?} is not a valid header name")))
        })
        .collect()
}

pub(super) fn check_modifier(
    ctx: &Ctx<'_>,
    field: &str,
    m: &HeaderModifier,
) -> Result<(), BuildError> {
    for n in m.set.iter().chain(&m.add).map(|h| &h.name).chain(&m.remove) {
        HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| ctx.err(format!("{field}: {n:?} is not a valid header name")))?;
    }
    for h in m.set.iter().chain(&m.add) {
        http::HeaderValue::from_str(&h.value).map_err(|_| {
            ctx.err(format!(
                "{field}: the value of {:?} is not a valid header value",
                h.name
            ))
        })?;
    }
    Ok(())
}

pub(super) fn percentage(ctx: &Ctx<'_>, field: &str, p: f64) -> Result<f64, BuildError> {
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(ctx.err(format!("{field}: {p} is not a percentage (0-100)")))
    }
}
