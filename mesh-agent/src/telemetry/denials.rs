//! The last refusals, in memory: what `meshctl denials` shows. Bounded (oldest
//! dropped first), so a flood of refused connections costs a fixed amount.
use std::{collections::VecDeque, sync::Mutex};

use mesh_model::denial::Denial;

/// How many refusals an agent keeps.
pub const KEPT: usize = 256;

#[derive(Debug, Default)]
pub struct Denials(Mutex<VecDeque<Denial>>);

impl Denials {
    pub fn record(&self, d: Denial) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == KEPT {
            q.pop_front();
        }
        q.push_back(d);
    }

    /// Newest first; only those concerning `pod` when given.
    pub fn recent(&self, pod: Option<&str>) -> Vec<Denial> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .rev()
            .filter(|d| pod.is_none_or(|p| d.concerns(p)))
            .cloned()
            .collect()
    }
}

/// The longest request text kept (`METHOD path`): a client's 64 KiB path must
/// not make 256 records cost 16 MiB.
pub const MAX_REQUEST: usize = 256;

/// `text` cut to `MAX_REQUEST` bytes (at a character boundary), marked when cut.
pub fn bounded(text: String) -> String {
    if text.len() <= MAX_REQUEST {
        return text;
    }
    let mut end = MAX_REQUEST;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use mesh_model::denial::Layer;

    use super::*;

    fn denial(n: usize) -> Denial {
        Denial {
            unix_ms: n as u64,
            layer: Layer::L4,
            source: "plaintext 198.19.1.10".into(),
            destination: format!("shop/p{}", n % 2),
            target: "198.19.2.10:80".into(),
            request: None,
            policy: None,
            reason: "no ALLOW policy matches".into(),
        }
    }

    #[test]
    fn a_huge_request_is_kept_cut() {
        let long = format!("GET /{}", "é".repeat(40_000));
        let cut = bounded(long);
        assert!(
            cut.len() <= MAX_REQUEST + 3 && cut.ends_with("..."),
            "{}",
            cut.len()
        );
        assert_eq!(bounded("GET /".into()), "GET /");
    }

    #[test]
    fn keeps_the_newest_and_filters_by_pod() {
        let d = Denials::default();
        for n in 0..KEPT + 10 {
            d.record(denial(n));
        }
        let all = d.recent(None);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].unix_ms, (KEPT + 9) as u64, "newest first");
        assert_eq!(all[KEPT - 1].unix_ms, 10, "the oldest ten dropped");
        let p1 = d.recent(Some("shop/p1"));
        assert_eq!(p1.len(), KEPT / 2);
        assert!(p1.iter().all(|x| x.destination == "shop/p1"));
    }
}
