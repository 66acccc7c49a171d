//! The access log's shape: JSON (the default) or `key=value` text, with all
//! fields or the operator's selection in the operator's order (`--access-log-format`,
//! `--access-log-fields`). Connections (L4) and requests (the waypoint) share it;
//! a selected field a line does not have (`method` on a connection) is left out.
use serde_json::{Map, Value};

/// Every field an access-log line can carry (L4 and L7).
pub const FIELDS: &[&str] = &[
    "reporter",
    "transport",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "grpc_status",
    "response_flags",
    "route",
    "destination_service",
    "upstream",
    "upstream_ms",
    "retries",
    "duration_ms",
    "bytes_sent",
    "bytes_received",
    "result",
    "src.identity",
    "dst.identity",
    "src.addr",
    "dst.addr",
    "trace_id",
    "span_id",
    "parent_span_id",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Encoding {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, values with spaces or quotes quoted.
    Text,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("access log field {0:?} is not one ferrymesh writes; the fields are: {fields}", fields = FIELDS.join(", "))]
pub struct UnknownField(pub String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLogFormat {
    pub encoding: Encoding,
    /// None: every field the line has, in its own order.
    pub fields: Option<Vec<String>>,
}

impl AccessLogFormat {
    /// Checks a field selection against what the agent writes.
    pub fn new(encoding: Encoding, fields: &[String]) -> Result<Self, UnknownField> {
        if let Some(bad) = fields.iter().find(|f| !FIELDS.contains(&f.as_str())) {
            return Err(UnknownField(bad.clone()));
        }
        let fields = (!fields.is_empty()).then(|| fields.to_vec());
        Ok(AccessLogFormat { encoding, fields })
    }

    /// The line for `record` (a JSON object of the fields above).
    pub fn render(&self, record: &Value) -> String {
        let empty = Map::new();
        let all = record.as_object().unwrap_or(&empty);
        let picked: Vec<(&str, &Value)> = match &self.fields {
            None => all.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            Some(f) => f
                .iter()
                .filter_map(|k| all.get(k).map(|v| (k.as_str(), v)))
                .collect(),
        };
        match self.encoding {
            // Written by hand to keep the selection's order (serde_json's maps sort).
            Encoding::Json => {
                let pairs: Vec<String> = picked
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", Value::String(k.to_owned())))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }
            Encoding::Text => picked
                .into_iter()
                .map(|(k, v)| format!("{k}={}", text_value(v)))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A value in text form: `-` for none, bare when it has no space, quote or `=`.
fn text_value(v: &Value) -> String {
    let s = match v {
        Value::Null => return "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.is_empty() {
        return "-".to_owned();
    }
    if s.contains([' ', '"', '=', '\n']) {
        Value::String(s).to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formats_and_field_selection() {
        let line = json!({"reporter": "waypoint", "method": "GET", "path": "/a b", "status": 200,
            "grpc_status": null, "src.identity": "spiffe://cluster.local/ns/shop/sa/client"});
        let fields = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            (Encoding::Json, fields(&[]), line.to_string()),
            (
                Encoding::Json,
                fields(&["status", "method"]),
                r#"{"status":200,"method":"GET"}"#.to_owned(),
            ),
            (
                Encoding::Text,
                fields(&["method", "path", "status", "grpc_status", "transport"]),
                r#"method=GET path="/a b" status=200 grpc_status=-"#.to_owned(),
            ),
        ];
        for (encoding, f, want) in cases {
            let fmt = AccessLogFormat::new(encoding, &f).expect("known fields");
            let got = fmt.render(&line);
            if f.is_empty() {
                let a: Value = serde_json::from_str(&got).unwrap();
                assert_eq!(a, line);
            } else {
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn an_unknown_field_is_refused_with_the_list() {
        let e = AccessLogFormat::new(Encoding::Text, &["client_ip".to_owned()]).unwrap_err();
        assert_eq!(e, UnknownField("client_ip".into()));
        assert!(e.to_string().contains("src.addr"));
    }
}
