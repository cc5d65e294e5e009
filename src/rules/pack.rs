//! Rule packs: the versioned data files of calling hours (`data/*.pack`, embedded) and the
//! custom windows a campaign configures, parsed into per-scope week schedules.
//!
//! A scope's schedule is, per weekday and for its holidays, a short list of local-time
//! intervals in minutes. Parsing refuses anything it does not understand with the line and the
//! reason; the embedded packs are parsed (and so checked) by unit tests.

use std::fmt;

/// Minutes since local midnight, 0..=1440.
pub type Minute = u16;

/// Allowed local-time intervals of one day, `[start, end)` in minutes, sorted and disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hours(pub Vec<(Minute, Minute)>);

impl Hours {
    pub fn closed() -> Hours {
        Hours(Vec::new())
    }

    pub fn all_day() -> Hours {
        Hours(vec![(0, 1440)])
    }

    /// The times allowed by both.
    pub fn intersect(&self, other: &Hours) -> Hours {
        let mut out = Vec::new();
        for &(a0, a1) in &self.0 {
            for &(b0, b1) in &other.0 {
                let (start, end) = (a0.max(b0), a1.min(b1));
                if start < end {
                    out.push((start, end));
                }
            }
        }
        out.sort_unstable();
        Hours(out)
    }

    fn parse(text: &str) -> Result<Hours, String> {
        if text == "closed" {
            return Ok(Hours::closed());
        }
        let mut intervals = Vec::new();
        for part in text.split(',') {
            let (start, end) = part
                .split_once('-')
                .ok_or_else(|| format!("'{part}' is not HH:MM-HH:MM"))?;
            let (start, end) = (parse_minute(start)?, parse_minute(end)?);
            if start >= end {
                return Err(format!("'{part}' ends before it starts"));
            }
            intervals.push((start, end));
        }
        intervals.sort_unstable();
        if intervals.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(format!("'{text}': intervals overlap"));
        }
        Ok(Hours(intervals))
    }
}

fn parse_minute(text: &str) -> Result<Minute, String> {
    let bad = || format!("'{text}' is not a time HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Which days a row covers: bit i is weekday i (Monday 0 .. Sunday 6); bit 7 holidays.
fn parse_days(text: &str) -> Result<u8, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day = |name: &str| {
        NAMES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("'{name}' is not a day (mon..sun, a range mon-fri, holiday)"))
    };
    if text == "holiday" {
        return Ok(HOLIDAY);
    }
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (day(a)?, day(b)?),
        None => (day(text)?, day(text)?),
    };
    if first > last {
        return Err(format!("'{text}': days run from mon to sun"));
    }
    Ok((first..=last).fold(0, |bits, d| bits | 1 << d))
}

const HOLIDAY: u8 = 1 << 7;

/// One scope's week: hours per weekday, and on its holidays (when it has a holiday row).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Week {
    pub days: [Hours; 7],
    pub holiday: Option<Hours>,
    /// Region of holidays.txt whose days are this scope's holidays (`US-AL`, `FR`).
    pub holiday_region: Option<String>,
    /// Days some row named (closed rows too), so a day named twice is refused.
    covered: u8,
}

impl Week {
    /// Days some row names, as bits (Monday is bit 0).
    pub fn covered_days(&self) -> u8 {
        self.covered
    }

    /// Adds `rows` ('DAYS HOURS' each); a day no row names stays closed.
    fn add_row(&mut self, days: &str, hours: &str) -> Result<(), String> {
        let bits = parse_days(days)?;
        let hours = Hours::parse(hours)?;
        if bits == HOLIDAY {
            if self.holiday.replace(hours).is_some() {
                return Err("a second holiday row for this scope".into());
            }
            return Ok(());
        }
        for (d, slot) in self.days.iter_mut().enumerate() {
            if bits & 1 << d != 0 {
                if self.covered & 1 << d != 0 {
                    return Err(format!("a second row for day {d} of this scope"));
                }
                *slot = hours.clone();
                self.covered |= 1 << d;
            }
        }
        Ok(())
    }
}

/// Where a pack's rows apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every number the pack applies to.
    All,
    /// Numbers located in this US state (or other subdivision code).
    State(String),
}

/// A parsed pack: its name, version, the country it applies to, and its scopes' weeks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pack {
    pub name: String,
    pub version: String,
    /// ISO code of the country whose numbers the pack applies to; `None` for custom windows
    /// (they apply to every number, in its own local time).
    pub country: Option<String>,
    pub scopes: Vec<(Scope, Week)>,
}

/// A pack that does not parse: the file (pack name), the line and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("calling-window pack '{pack}', line {line}: {reason}")]
pub struct PackError {
    pub pack: String,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::State(s) => f.write_str(s),
        }
    }
}

impl Pack {
    /// Parses a pack file's text (`origin` names it in errors).
    pub fn parse(origin: &str, text: &str) -> Result<Pack, PackError> {
        let fail = |line: usize, reason: String| PackError {
            pack: origin.to_owned(),
            line,
            reason,
        };
        let mut pack = Pack {
            name: String::new(),
            version: String::new(),
            country: None,
            scopes: Vec::new(),
        };
        let mut holidays: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            match key {
                "pack" => pack.name = rest.to_owned(),
                "version" => pack.version = rest.to_owned(),
                "country" => pack.country = Some(rest.to_owned()),
                "holidays" => holidays = Some(rest.to_owned()),
                _ => {
                    let (rule, source) = line
                        .split_once('|')
                        .ok_or_else(|| fail(line_no, "a row needs '| SOURCE'".into()))?;
                    if source.trim().is_empty() {
                        return Err(fail(line_no, "a row needs its source after '|'".into()));
                    }
                    let fields: Vec<&str> = rule.split_whitespace().collect();
                    let [scope, days, hours] = fields[..] else {
                        return Err(fail(line_no, "a row is 'SCOPE DAYS HOURS | SOURCE'".into()));
                    };
                    let scope = if scope == "*" {
                        Scope::All
                    } else {
                        Scope::State(scope.to_owned())
                    };
                    let at = match pack.scopes.iter().position(|(s, _)| *s == scope) {
                        Some(at) => at,
                        None => {
                            let region = holidays.as_ref().map(|h| match &scope {
                                Scope::State(s) => h.replace('*', s),
                                Scope::All => h.clone(),
                            });
                            pack.scopes.push((
                                scope,
                                Week {
                                    holiday_region: region,
                                    ..Week::default()
                                },
                            ));
                            pack.scopes.len() - 1
                        }
                    };
                    pack.scopes[at]
                        .1
                        .add_row(days, hours)
                        .map_err(|reason| fail(line_no, reason))?;
                }
            }
        }
        if pack.name.is_empty() || pack.version.is_empty() || pack.country.is_none() {
            return Err(fail(
                0,
                "a pack needs 'pack', 'version' and 'country'".into(),
            ));
        }
        if pack.scopes.is_empty() {
            return Err(fail(0, "a pack needs at least one row".into()));
        }
        if let Some((scope, _)) = pack
            .scopes
            .iter()
            .find(|(_, w)| w.holiday.is_some() && w.holiday_region.is_none())
        {
            return Err(fail(
                0,
                format!("scope {scope} has a holiday row but the pack names no 'holidays'"),
            ));
        }
        Ok(pack)
    }

    /// Custom windows from a campaign's config: rows 'DAYS HOURS' (e.g. "mon-fri 09:00-17:00"),
    /// applying to every number in its own local time. Days no row names are closed.
    pub fn custom(campaign: &str, rows: &[String]) -> Result<Pack, PackError> {
        let mut week = Week::default();
        for (index, row) in rows.iter().enumerate() {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let fail = |reason: String| PackError {
                pack: format!("custom windows of campaign '{campaign}'"),
                line: index + 1,
                reason,
            };
            let [days, hours] = fields[..] else {
                return Err(fail(format!(
                    "'{row}' is not 'DAYS HOURS' (e.g. 'mon-fri 09:00-17:00')"
                )));
            };
            if days == "holiday" {
                return Err(fail("custom windows have no holiday calendar".into()));
            }
            week.add_row(days, hours).map_err(fail)?;
        }
        Ok(Pack {
            name: "custom".into(),
            version: String::new(),
            country: None,
            scopes: vec![(Scope::All, week)],
        })
    }
}
