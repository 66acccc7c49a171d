//! W3C trace context: continue the caller's trace or start one; each hop is a span.
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    /// The caller's span, if it sent one.
    pub parent_id: Option<String>,
    /// This hop's span: sent upstream as the parent.
    pub span_id: String,
    pub flags: String,
}

fn hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    loop {
        s.clear();
        for _ in 0..bytes {
            let _ = write!(s, "{:02x}", fastrand::u8(..));
        }
        // All-zero ids are invalid.
        if s.bytes().any(|b| b != b'0') {
            return s;
        }
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceContext {
    /// From an incoming `traceparent` (version 00), or a new trace when it is absent
    /// or malformed.
    pub fn from_header(value: Option<&str>) -> TraceContext {
        let parsed = value.and_then(|v| {
            let mut it = v.trim().split('-');
            let (version, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
            let ok = is_hex(version, 2)
                && version != "ff"
                && is_hex(trace, 32)
                && trace.bytes().any(|b| b != b'0')
                && is_hex(parent, 16)
                && parent.bytes().any(|b| b != b'0')
                && is_hex(flags, 2);
            ok.then(|| (trace.to_owned(), parent.to_owned(), flags.to_owned()))
        });
        match parsed {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                parent_id: Some(parent),
                span_id: hex(8),
                flags,
            },
            None => TraceContext {
                trace_id: hex(16),
                parent_id: None,
                span_id: hex(8),
                flags: "01".into(),
            },
        }
    }

    /// The header sent upstream: same trace, this hop's span as parent.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cases = [
            ("valid is continued", Some(incoming), true),
            ("absent starts a trace", None, false),
            ("bad length", Some("00-4bf92f-00f067aa0ba902b7-01"), false),
            (
                "zero trace id",
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                false,
            ),
            (
                "upper case",
                Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
                false,
            ),
            (
                "version ff",
                Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                false,
            ),
        ];
        for (name, header, continued) in cases {
            let t = TraceContext::from_header(header);
            assert_eq!(t.parent_id.is_some(), continued, "{name}");
            if continued {
                assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{name}");
                assert_ne!(t.span_id, "00f067aa0ba902b7", "{name}: a new span per hop");
            }
            let out = t.header();
            assert_eq!(
                TraceContext::from_header(Some(&out)).trace_id,
                t.trace_id,
                "{name}: {out}"
            );
        }
    }
}
