//! `allowed_hours`: a daily UTC window such as `"08:00-17:00 UTC"`. Only UTC is accepted so
//! that nobody reads the window in the proxy host's local time.

/// `[start, end)` in minutes since 00:00 UTC; `start > end` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursWindow {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl HoursWindow {
    pub fn parse(s: &str) -> Result<HoursWindow, String> {
        let expected = "expected \"HH:MM-HH:MM UTC\", e.g. \"08:00-17:00 UTC\" (end exclusive; a window may wrap past midnight)";
        let Some(range) = s.strip_suffix(" UTC") else {
            return Err(format!("{s:?} must end in \" UTC\"; {expected}"));
        };
        let Some((a, b)) = range.split_once('-') else {
            return Err(format!("{s:?}: {expected}"));
        };
        let start =
            clock(a, false).ok_or_else(|| format!("{s:?}: bad start time {a:?}; {expected}"))?;
        let end = clock(b, true).ok_or_else(|| format!("{s:?}: bad end time {b:?}; {expected}"))?;
        if start == end {
            return Err(format!(
                "{s:?}: start equals end, which is ambiguous; for all day write \"00:00-24:00 UTC\" or leave allowed_hours out"
            ));
        }
        Ok(HoursWindow {
            start_minute: start,
            end_minute: end,
        })
    }

    /// Whether the UTC minute of `now_unix_secs` lies in the window.
    pub fn contains(&self, now_unix_secs: i64) -> bool {
        let minute = (now_unix_secs.rem_euclid(86_400) / 60) as u16;
        if self.start_minute < self.end_minute {
            self.start_minute <= minute && minute < self.end_minute
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

fn clock(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    match (h, m) {
        (24, 0) if allow_24 => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl std::fmt::Display for HoursWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{} UTC", hm(self.start_minute), hm(self.end_minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> HoursWindow {
        HoursWindow::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    const DAY: i64 = 86_400;
    fn at(h: i64, m: i64, s: i64) -> i64 {
        // An arbitrary day (2026-06-15) so that day arithmetic is exercised.
        1_781_481_600 + h * 3600 + m * 60 + s
    }

    #[test]
    fn business_hours_boundaries() {
        let b = w("08:00-17:00 UTC");
        assert_eq!((b.start_minute, b.end_minute), (480, 1020));
        assert!(!b.contains(at(7, 59, 59)));
        assert!(b.contains(at(8, 0, 0)));
        assert!(b.contains(at(16, 59, 59)));
        assert!(!b.contains(at(17, 0, 0)));
        assert!(!b.contains(at(23, 0, 0)));
    }

    #[test]
    fn window_wrapping_midnight() {
        let n = w("22:00-06:00 UTC");
        assert!(n.contains(at(22, 0, 0)));
        assert!(n.contains(at(23, 59, 59)));
        assert!(n.contains(at(0, 0, 0)));
        assert!(n.contains(at(5, 59, 0)));
        assert!(!n.contains(at(6, 0, 0)));
        assert!(!n.contains(at(12, 0, 0)));
        assert!(!n.contains(at(21, 59, 59)));
    }

    #[test]
    fn end_of_day_and_negative_times() {
        let all = w("00:00-24:00 UTC");
        assert!(all.contains(at(0, 0, 0)) && all.contains(at(23, 59, 59)));
        let late = w("20:00-24:00 UTC");
        assert!(late.contains(at(23, 59, 59)) && !late.contains(at(0, 0, 0)));
        // Before 1970: still the right minute of the day.
        assert!(w("23:00-24:00 UTC").contains(-1));
        assert!(late.contains(at(21, 0, 0) - 1000 * DAY));
    }

    #[test]
    fn bad_windows_are_refused() {
        for s in [
            "08:00-17:00",
            "08:00-17:00 utc",
            "08:00-17:00 CET",
            "8:00-17:00 UTC",
            "08:00-24:01 UTC",
            "24:00-08:00 UTC",
            "08:60-17:00 UTC",
            "25:00-26:00 UTC",
            "08:00-08:00 UTC",
            "08:00 UTC",
            "08:00--17:00 UTC",
            " 08:00-17:00 UTC",
            "+8:00-17:00 UTC",
            "",
        ] {
            assert!(HoursWindow::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(w("22:00-06:30 UTC").to_string(), "22:00-06:30 UTC");
    }
}
