//! Attempt caps and cooldowns: the arithmetic of "may this number be attempted again, and if
//! not, when?".
//!
//! A [`Rule`] caps attempts over a rolling window and starts cooldowns on outcomes; a campaign
//! names rule sets (built in: `fl-ok-md`, `fr`, `reg-f`; or custom ones from config), and a
//! new attempt is granted only if every rule of every named set allows it. [`decide`] is a
//! pure function of the rules, the attempts that count and the instant: the store calls it
//! when it applies a reservation record, in log order, so every host applying the same log
//! reaches the same decision.
//!
//! Pure: no tokio, no proto, no I/O, never reads the clock (callers pass the instant).

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// How an attempt ended, as the dialer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// No conversation (no answer, busy, voicemail).
    NoContact = 1,
    /// A conversation took place.
    Contact = 2,
    /// The called party refused the offer.
    Refusal = 3,
    /// The called party asked never to be called again (also suppresses the number).
    OptOut = 4,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::NoContact,
        Outcome::Contact,
        Outcome::Refusal,
        Outcome::OptOut,
    ];

    pub fn from_code(code: u8) -> Option<Outcome> {
        Self::ALL.into_iter().find(|o| *o as u8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::NoContact => "no_contact",
            Outcome::Contact => "contact",
            Outcome::Refusal => "refusal",
            Outcome::OptOut => "opt_out",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// One rule: at most `cap` attempts in any `window_ms`, and no attempt for the cooldown after
/// each listed outcome (counted from when the outcome was recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub cap: u32,
    pub window_ms: i64,
    pub cooldowns: Vec<(Outcome, i64)>,
}

impl Rule {
    /// How long an attempt can matter to this rule.
    pub fn horizon_ms(&self) -> i64 {
        self.cooldowns
            .iter()
            .map(|(_, d)| *d)
            .fold(self.window_ms, i64::max)
    }
}

/// An attempt that counts: when it was made (reserved), and its outcome once recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub at_ms: i64,
    pub outcome: Option<(Outcome, i64)>,
}

/// What [`decide`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub granted: bool,
    /// Attempts left in the tightest window after this one (if granted) or now (if refused).
    pub remaining: u32,
    /// Refused: the earliest instant every rule allows an attempt, given the attempts known
    /// now. Granted: 0.
    pub next_allowed_at_ms: i64,
}

/// Whether an attempt at `now_ms` is allowed by `rules`, given the attempts that count, and if
/// not, the earliest instant it is. Attempts later than `now_ms` (another host's clock) count
/// as if inside the window: fail closed.
pub fn decide(rules: &[Rule], attempts: &[Attempt], now_ms: i64) -> Decision {
    let mut next = now_ms;
    let mut remaining = u32::MAX;
    let mut instants: Vec<i64> = Vec::with_capacity(attempts.len());
    for rule in rules {
        instants.clear();
        instants.extend(
            attempts
                .iter()
                .map(|a| a.at_ms)
                .filter(|&at| at > now_ms - rule.window_ms),
        );
        let count = instants.len() as u64;
        let cap = u64::from(rule.cap);
        if count >= cap {
            // Allowed again once the oldest count - cap + 1 of these have left the window.
            instants.sort_unstable();
            let leaving = (count - cap) as usize;
            let until = if cap == 0 {
                i64::MAX
            } else {
                instants[leaving].saturating_add(rule.window_ms)
            };
            next = next.max(until);
        }
        remaining = remaining.min(cap.saturating_sub(count) as u32);
        for attempt in attempts {
            let Some((outcome, at)) = attempt.outcome else {
                continue;
            };
            for (_, cooldown) in rule.cooldowns.iter().filter(|(o, _)| *o == outcome) {
                next = next.max(at.saturating_add(*cooldown));
            }
        }
    }
    let granted = next <= now_ms;
    Decision {
        granted,
        remaining: if granted {
            remaining.saturating_sub(1)
        } else {
            remaining
        },
        next_allowed_at_ms: if granted { 0 } else { next },
    }
}

/// A named set of rules, built in or from config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// The rule sets this build knows by name, with their sources.
pub fn builtin_rule_sets() -> Vec<RuleSet> {
    vec![
        // Florida Telephone Solicitation Act (Fla. Stat. 501.059(8)(b)), Oklahoma Telephone
        // Solicitation Act (15 O.S. 775C.4), Maryland Stop the Spam Calls Act (Md. Com. Law
        // 14-4503): at most 3 calls in 24 hours on the same subject.
        RuleSet {
            name: "fl-ok-md".into(),
            rules: vec![Rule {
                cap: 3,
                window_ms: DAY_MS,
                cooldowns: vec![],
            }],
        },
        // France, décret 2022-1313 (art. D. 224-5-2 code de la consommation): at most 4
        // solicitations in 30 days, none for 60 days after a refusal.
        RuleSet {
            name: "fr".into(),
            rules: vec![Rule {
                cap: 4,
                window_ms: 30 * DAY_MS,
                cooldowns: vec![(Outcome::Refusal, 60 * DAY_MS)],
            }],
        },
        // US Regulation F (12 CFR 1006.14(b)(2)): more than 7 calls in 7 days, or a call
        // within 7 days after a telephone conversation, is presumed harassment.
        RuleSet {
            name: "reg-f".into(),
            rules: vec![Rule {
                cap: 7,
                window_ms: 7 * DAY_MS,
                cooldowns: vec![(Outcome::Contact, 7 * DAY_MS)],
            }],
        },
    ]
}

/// Parses a duration as config writes it: a whole number and a unit, `m`, `h` or `d`
/// ("24h", "30d"). At most 400 days (attempt history is personal data).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let unit_ms = match unit {
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => {
            return Err(format!(
                "'{text}': a duration is a number and m, h or d (\"24h\")"
            ));
        }
    };
    let value: i64 = digits
        .parse()
        .map_err(|_| format!("'{text}': a duration is a number and m, h or d (\"24h\")"))?;
    let ms = value.saturating_mul(unit_ms);
    if value <= 0 || ms > 400 * DAY_MS {
        return Err(format!(
            "'{text}': must be more than 0 and at most 400 days"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: i64) -> Attempt {
        Attempt {
            at_ms: ms,
            outcome: None,
        }
    }

    fn rules(name: &str) -> Vec<Rule> {
        builtin_rule_sets()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
            .rules
    }

    #[test]
    fn florida_grants_three_in_24_hours_and_names_when_the_fourth_is_allowed() {
        let fl = rules("fl-ok-md");
        let t0 = 1_800_000_000_000;
        let mut made = vec![];
        for (i, left) in [2, 1, 0].into_iter().enumerate() {
            let now = t0 + i as i64 * HOUR_MS;
            let d = decide(&fl, &made, now);
            assert_eq!((d.granted, d.remaining), (true, left));
            made.push(at(now));
        }
        let d = decide(&fl, &made, t0 + 3 * HOUR_MS);
        assert!(!d.granted);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.next_allowed_at_ms, t0 + DAY_MS);
        assert!(!decide(&fl, &made, t0 + DAY_MS - 1).granted);
        assert!(decide(&fl, &made, t0 + DAY_MS).granted);
    }

    #[test]
    fn cooldowns_start_at_the_outcome() {
        let fr = rules("fr");
        let t0 = 1_800_000_000_000;
        let refused = Attempt {
            at_ms: t0,
            outcome: Some((Outcome::Refusal, t0 + 5 * MINUTE_MS)),
        };
        let d = decide(&fr, &[refused], t0 + DAY_MS);
        assert!(!d.granted);
        assert_eq!(d.next_allowed_at_ms, t0 + 5 * MINUTE_MS + 60 * DAY_MS);
        // A contact starts no cooldown in France, but does under Regulation F.
        let talked = Attempt {
            at_ms: t0,
            outcome: Some((Outcome::Contact, t0)),
        };
        assert!(decide(&fr, &[talked], t0 + 1).granted);
        let d = decide(&rules("reg-f"), &[talked], t0 + 1);
        assert_eq!(d.next_allowed_at_ms, t0 + 7 * DAY_MS);
        // Several sets: the latest of their instants.
        let mut both = fr.clone();
        both.extend(rules("fl-ok-md"));
        let d = decide(&both, &[refused, at(t0), at(t0 + 1)], t0 + 2);
        assert_eq!(d.next_allowed_at_ms, t0 + 5 * MINUTE_MS + 60 * DAY_MS);
    }

    #[test]
    fn durations_parse_and_bounds_hold() {
        assert_eq!(parse_duration("24h"), Ok(DAY_MS));
        assert_eq!(parse_duration("30d"), Ok(30 * DAY_MS));
        assert_eq!(parse_duration("90m"), Ok(90 * MINUTE_MS));
        for bad in ["", "h", "0d", "-1d", "401d", "3w", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(Outcome::from_name("opt_out"), Some(Outcome::OptOut));
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_code(o as u8), Some(o));
        }
    }

    /// The model: an attempt at `t` is allowed iff, for every rule, fewer than `cap` attempts
    /// lie in `(t - window, ∞)` and no outcome's cooldown covers `t`.
    fn model_allows(rules: &[Rule], attempts: &[Attempt], t: i64) -> bool {
        rules.iter().all(|rule| {
            let count = attempts
                .iter()
                .filter(|a| a.at_ms > t - rule.window_ms)
                .count();
            let cooled = attempts.iter().all(|a| match a.outcome {
                None => true,
                Some((o, at)) => rule
                    .cooldowns
                    .iter()
                    .filter(|(c, _)| *c == o)
                    .all(|(_, d)| t >= at + d),
            });
            (count as u64) < u64::from(rule.cap) && cooled
        })
    }

    fn rule_strategy() -> impl Strategy<Value = Rule> {
        (
            1u32..5,
            1i64..600,
            proptest::collection::vec((1u8..5, 1i64..900), 0..2),
        )
            .prop_map(|(cap, window, cooldowns)| Rule {
                cap,
                window_ms: window * MINUTE_MS,
                cooldowns: cooldowns
                    .into_iter()
                    .map(|(o, d)| (Outcome::from_code(o).unwrap(), d * MINUTE_MS))
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn decide_agrees_with_the_model_and_next_allowed_is_the_earliest(
            rules in proptest::collection::vec(rule_strategy(), 1..3),
            attempts in proptest::collection::vec(
                (0i64..1000, proptest::option::of((1u8..5, 0i64..30))), 0..8),
            now in 0i64..1200,
        ) {
            let attempts: Vec<Attempt> = attempts
                .into_iter()
                .map(|(m, outcome)| Attempt {
                    at_ms: m * MINUTE_MS,
                    outcome: outcome.map(|(o, later)| {
                        (Outcome::from_code(o).unwrap(), (m + later) * MINUTE_MS)
                    }),
                })
                .collect();
            let now = now * MINUTE_MS;
            let d = decide(&rules, &attempts, now);
            prop_assert_eq!(d.granted, model_allows(&rules, &attempts, now));
            if !d.granted {
                let next = d.next_allowed_at_ms;
                prop_assert!(next > now);
                prop_assert!(model_allows(&rules, &attempts, next));
                prop_assert!(!model_allows(&rules, &attempts, next - 1));
                // No earlier minute either.
                let mut t = now;
                while t < next {
                    prop_assert!(!model_allows(&rules, &attempts, t), "{} allowed before {}", t, next);
                    t += MINUTE_MS;
                }
            }
        }
    }
}
