//! The one way the lab waits: poll a condition until it holds or a deadline passes,
//! then fail saying what was awaited and what was last seen. Never a bare sleep.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Polls `check` (quickly at first, then every 50 ms) until it returns `Ok`, or
/// fails after `deadline` with `what` and the last `Err` it returned.
pub fn eventually<T, E: std::fmt::Display>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> std::result::Result<T, E>,
) -> Result<T> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(1);
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= end => {
                bail!("timed out after {deadline:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_it_holds_and_says_what_it_waited_for() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "three calls", || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("call {n}"))
            }
        })
        .expect("holds");
        assert_eq!(v, 3);
        let e = eventually(Duration::ZERO, "the impossible", || Err::<(), _>("never"))
            .expect_err("times out")
            .to_string();
        assert!(e.contains("the impossible") && e.contains("never"), "{e}");
    }
}
