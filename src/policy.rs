//! Policy: which sets a campaign consults and how their answers combine into a verdict.
//!
//! Owns tenants, campaigns, blocked prefixes, the freshness rule and fail-closed behaviour:
//! a set the campaign needs but that is not loaded gives BLOCK with NOT_READY, a registry copy
//! older than the campaign allows gives STALE_LIST, and only when no reason applies is the
//! verdict ALLOW. Pure: reads loaded sets, never loads them, knows no tokio and no proto types.

use crate::config::UnknownLocationPolicy;
use crate::config::{BlockReason, Config, SetDefinition, StalePolicy, parse_prefix};
use crate::engine::date::Day;
use crate::engine::number::{Number, NumberError, NumberParser, Region};
use crate::engine::set::{BatchStats, SuppressionSet};
use crate::rules::{Answer, Hints, Located, PlaceCache, Schedule, WindowCode};
use crate::store::Overlay;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Index of a set in the policy's catalog.
pub type SetId = usize;

/// Why a number must not be called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    NationalRegistry = 0,
    InternalDnc = 1,
    Erased = 2,
    NoConsent = 3,
    BlockedPrefix = 4,
    InvalidNumber = 5,
    StaleList = 6,
    NotReady = 7,
    FleetLag = 8,
    OutsideCallingWindow = 9,
    UnknownLocation = 10,
    AttemptLimit = 11,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::NationalRegistry,
        Reason::InternalDnc,
        Reason::Erased,
        Reason::NoConsent,
        Reason::BlockedPrefix,
        Reason::InvalidNumber,
        Reason::StaleList,
        Reason::NotReady,
        Reason::FleetLag,
        Reason::OutsideCallingWindow,
        Reason::UnknownLocation,
        Reason::AttemptLimit,
    ];

    /// The reason's name: the one list of reason names. The wire form (HTTP JSON, SIP
    /// `Reason` text, the client's output; the proto enum's value names are these with a
    /// `REASON_` prefix, a test holds them together); metrics labels are it in lower case.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NationalRegistry => "NATIONAL_REGISTRY",
            Reason::InternalDnc => "INTERNAL_DNC",
            Reason::Erased => "ERASED",
            Reason::NoConsent => "NO_CONSENT",
            Reason::BlockedPrefix => "BLOCKED_PREFIX",
            Reason::InvalidNumber => "INVALID_NUMBER",
            Reason::StaleList => "STALE_LIST",
            Reason::NotReady => "NOT_READY",
            Reason::FleetLag => "FLEET_LAG",
            Reason::OutsideCallingWindow => "OUTSIDE_CALLING_WINDOW",
            Reason::UnknownLocation => "UNKNOWN_LOCATION",
            Reason::AttemptLimit => "ATTEMPT_LIMIT",
        }
    }

    /// The reason a hit in a block set of this configured reason reports.
    pub fn from_block(reason: BlockReason) -> Reason {
        match reason {
            BlockReason::NationalRegistry => Reason::NationalRegistry,
            BlockReason::InternalDnc => Reason::InternalDnc,
            BlockReason::Erased => Reason::Erased,
        }
    }
}

/// A small set of reasons, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons(pub u16);

impl Reasons {
    pub fn insert(&mut self, reason: Reason) {
        self.0 |= 1 << reason as u8;
    }

    pub fn contains(self, reason: Reason) -> bool {
        self.0 & (1 << reason as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Reason> {
        Reason::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

/// One loaded snapshot of a configured set.
#[derive(Debug)]
pub struct LoadedSet {
    pub set: SuppressionSet,
    pub file: PathBuf,
    pub loaded_at_ms: i64,
}

/// The sets in force, one slot per catalog entry. Published as a whole; never mutated.
#[derive(Debug, Default)]
pub struct LoadedSets {
    pub slots: Vec<Option<Arc<LoadedSet>>>,
}

/// A campaign's attempt caps, compiled: the rules every reservation record carries, the
/// scope attempts are counted per (`campaign:NAME`, `purpose:NAME` or `tenant`) and how long
/// an unconfirmed reservation holds its slot.
#[derive(Debug, Clone)]
pub struct AttemptCaps {
    pub rules: Vec<crate::rules::attempts::Rule>,
    pub scope: String,
    pub ttl_ms: i64,
}

/// A campaign, compiled.
#[derive(Debug)]
pub struct Campaign {
    pub tenant: String,
    pub name: String,
    pub block_sets: Vec<SetId>,
    pub consent_sets: Vec<SetId>,
    pub require_consent: bool,
    /// Calling windows (packs and custom windows); `None` when the campaign has none.
    pub windows: Option<Schedule>,
    pub unknown_location: UnknownLocationPolicy,
    /// (prefix digits as an integer, digit count).
    pub prefixes: Vec<(u64, u32)>,
    pub prefix_texts: Vec<String>,
    pub max_list_age_days: u32,
    pub stale_list: StalePolicy,
    /// What a check answers while this host lags behind its fleet (FLEET_LAG or a warning).
    pub fleet_lag: StalePolicy,
    /// Attempt caps: `None` when the campaign names no rule set.
    pub attempts: Option<AttemptCaps>,
    /// Block sets then consent sets: the order answers index them. Fixed at compile time so
    /// a check walks a slice instead of collecting one.
    consulted: Vec<SetId>,
    /// The reason a hit in each block set reports, by position.
    block_reasons: Vec<Reason>,
}

impl Campaign {
    /// Sets consulted, in the order answers index them (block sets, then consent sets).
    pub fn consulted(&self) -> &[SetId] {
        &self.consulted
    }
}

#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub region: Region,
    pub parser: NumberParser,
    pub campaigns: HashMap<String, Arc<Campaign>>,
}

/// Why a request names no usable tenant or campaign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown tenant '{0}'")]
    UnknownTenant(String),
    #[error("tenant '{tenant}' has no campaign '{campaign}'")]
    UnknownCampaign { tenant: String, campaign: String },
    #[error("no tenant given and no default tenant configured")]
    NoTenant,
    #[error("no campaign given and no default campaign configured")]
    NoCampaign,
}

/// Tenants, campaigns and the set catalog, compiled from a validated config.
#[derive(Debug)]
pub struct Policy {
    pub sets: Vec<SetDefinition>,
    /// Set id → index in `sets`, so a set named in a request or a journal record is found
    /// without a scan.
    set_ids: HashMap<String, SetId>,
    pub tenants: HashMap<String, Tenant>,
    pub default_tenant: Option<String>,
    pub default_campaign: Option<String>,
}

/// The sets an erasure changes. Every set of the tenant other than its erased sets loses the
/// number (internal do-not-call, consent, any other list of the tenant's own); the erased sets
/// gain its keyed fingerprint and keep it blocked for good. Global sets (national registries)
/// are the regulator's data: an erasure leaves them as they are, and the receipt says so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErasurePlan {
    pub remove_from: Vec<SetId>,
    pub add_to: Vec<SetId>,
    /// Global sets the tenant's campaigns consult, left unchanged.
    pub retained_in: Vec<SetId>,
}

/// The tenant's erased sets.
fn erased_sets<'a>(sets: &'a [SetDefinition], tenant: &'a str) -> impl Iterator<Item = SetId> + 'a {
    sets.iter().enumerate().filter_map(move |(id, d)| {
        (d.tenant.as_deref() == Some(tenant) && d.reason == Some(BlockReason::Erased)).then_some(id)
    })
}

/// The answer for one number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub reasons: Reasons,
    /// Bit i: the campaign's i-th consulted set matched (a block set holding the number).
    pub matched: u64,
    pub number: Option<Number>,
    /// With OUTSIDE_CALLING_WINDOW: the earliest instant (unix ms) the windows allow the call,
    /// `None` when none is within the search horizon.
    pub next_allowed_at_ms: Option<i64>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// What holds for every number of one request: readiness and freshness of the campaign's sets.
#[derive(Debug)]
pub struct CampaignState<'a> {
    pub campaign: &'a Campaign,
    /// Reasons every number gets (NOT_READY, STALE_LIST).
    pub common: Reasons,
    /// Consulted sets in order, `None` when not loaded.
    pub sets: Vec<Option<&'a LoadedSet>>,
    /// Overlays (mutations since the snapshot) and definitions of every set, indexed by
    /// `SetId` through `campaign.consulted`.
    overlays: &'a [Overlay],
    definitions: &'a [SetDefinition],
    pub warnings: Vec<String>,
    consent_ready: bool,
    /// The instant checked for and the caller's location hints ([`CampaignState::at`]).
    moment: Option<Moment>,
}

/// The instant a check is for (unix ms; the edges default it to now) and where the caller
/// says the called party is. Only calling windows read it.
#[derive(Clone, Debug, Default)]
pub struct Moment {
    pub at_ms: i64,
    pub hints: Hints,
    /// A batch's hints for each number (one per number, in batch order), over `hints`.
    pub each: Option<Located>,
}

impl Policy {
    pub fn compile(config: &Config) -> Policy {
        let index: HashMap<&str, SetId> = config
            .sets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut tenants = HashMap::new();
        for (tenant_name, tenant) in config.tenants() {
            let region = Region::parse(&tenant.region).expect("validated region");
            let resolve = |name: &String| -> SetId {
                let local = format!("{tenant_name}/{name}");
                *index
                    .get(local.as_str())
                    .or_else(|| index.get(name.as_str()))
                    .expect("validated set reference")
            };
            let campaigns = tenant
                .campaigns
                .iter()
                .map(|(name, c)| {
                    let mut block_sets: Vec<SetId> = c.block_sets.iter().map(resolve).collect();
                    // An erased person leaves the tenant's plain sets, so only the erased set
                    // keeps the number from being called: it blocks in every campaign of the
                    // tenant, whether or not the campaign's block_sets name it.
                    for id in erased_sets(&config.sets, tenant_name) {
                        if !block_sets.contains(&id) {
                            block_sets.push(id);
                        }
                    }
                    let consent_sets: Vec<SetId> = c.consent_sets.iter().map(resolve).collect();
                    let campaign = Campaign {
                        tenant: tenant_name.clone(),
                        name: name.clone(),
                        consulted: block_sets.iter().chain(&consent_sets).copied().collect(),
                        block_reasons: block_sets
                            .iter()
                            .map(|&id| {
                                Reason::from_block(
                                    config.sets[id].reason.unwrap_or(BlockReason::InternalDnc),
                                )
                            })
                            .collect(),
                        block_sets,
                        consent_sets,
                        require_consent: c.require_consent,
                        windows: (!c.calling_windows.is_empty() || !c.custom_windows.is_empty())
                            .then(|| {
                                Schedule::new(name, &c.calling_windows, &c.custom_windows)
                                    .expect("validated calling windows")
                            }),
                        unknown_location: c.unknown_location,
                        prefixes: c
                            .blocked_prefixes
                            .iter()
                            .filter_map(|p| parse_prefix(p))
                            .collect(),
                        prefix_texts: c.blocked_prefixes.clone(),
                        max_list_age_days: c.max_list_age_days,
                        stale_list: c.stale_list,
                        fleet_lag: c.fleet_lag,
                        attempts: (!c.attempt_rules.is_empty()).then(|| AttemptCaps {
                            rules: config
                                .attempt_rules(&c.attempt_rules)
                                .expect("validated attempt rules"),
                            scope: match c.attempt_scope.as_deref() {
                                None | Some("campaign") => format!("campaign:{name}"),
                                Some(other) => other.to_owned(),
                            },
                            ttl_ms: i64::from(c.attempt_ttl_seconds) * 1000,
                        }),
                    };
                    (name.clone(), Arc::new(campaign))
                })
                .collect();
            tenants.insert(
                tenant_name.clone(),
                Tenant {
                    name: tenant_name.clone(),
                    region,
                    parser: NumberParser::new(Some(region)),
                    campaigns,
                },
            );
        }
        Policy {
            sets: config.sets.clone(),
            set_ids: index
                .into_iter()
                .map(|(id, at)| (id.to_owned(), at))
                .collect(),
            tenants,
            default_tenant: config.defaults().tenant.clone(),
            default_campaign: config.defaults().campaign.clone(),
        }
    }

    /// The set with this id (`tenant/name`, or a global set's name).
    pub fn set_id(&self, id: &str) -> Option<SetId> {
        self.set_ids.get(id).copied()
    }

    /// The tenant and campaign a request means; empty names take the configured defaults.
    pub fn resolve(
        &self,
        tenant: &str,
        campaign: &str,
    ) -> Result<(&Tenant, &Arc<Campaign>), PolicyError> {
        let tenant_name = if tenant.is_empty() {
            self.default_tenant
                .as_deref()
                .ok_or(PolicyError::NoTenant)?
        } else {
            tenant
        };
        let found = self
            .tenants
            .get(tenant_name)
            .ok_or_else(|| PolicyError::UnknownTenant(tenant_name.chars().take(64).collect()))?;
        let campaign_name = if !campaign.is_empty() {
            campaign
        } else if tenant.is_empty() || Some(tenant) == self.default_tenant.as_deref() {
            self.default_campaign
                .as_deref()
                .ok_or(PolicyError::NoCampaign)?
        } else if found.campaigns.len() == 1 {
            // A tenant with a single campaign needs no name.
            found
                .campaigns
                .keys()
                .next()
                .map(String::as_str)
                .ok_or(PolicyError::NoCampaign)?
        } else {
            return Err(PolicyError::NoCampaign);
        };
        let campaign =
            found
                .campaigns
                .get(campaign_name)
                .ok_or_else(|| PolicyError::UnknownCampaign {
                    tenant: tenant_name.to_owned(),
                    campaign: campaign_name.chars().take(64).collect(),
                })?;
        Ok((found, campaign))
    }

    /// What erasing a number of `tenant` does to its sets (the rule lives here, not at an edge).
    pub fn erasure_plan(&self, tenant: &str) -> ErasurePlan {
        let mut plan = ErasurePlan::default();
        for (id, definition) in self.sets.iter().enumerate() {
            if definition.tenant.as_deref() == Some(tenant) {
                if definition.reason == Some(BlockReason::Erased) {
                    plan.add_to.push(id);
                } else {
                    plan.remove_from.push(id);
                }
            }
        }
        let mut retained: Vec<SetId> = self
            .tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.campaigns.values())
            .flat_map(|c| c.consulted().iter().copied())
            .filter(|&id| self.sets[id].tenant.is_none())
            .collect();
        retained.sort_unstable();
        retained.dedup();
        plan.retained_in = retained;
        plan
    }

    /// Every set some campaign needs: the daemon is ready once all are loaded.
    pub fn needed_sets(&self) -> Vec<SetId> {
        let mut needed: Vec<SetId> = self
            .tenants
            .values()
            .flat_map(|t| t.campaigns.values())
            .flat_map(|c| c.consulted().iter().copied())
            .collect();
        needed.sort_unstable();
        needed.dedup();
        needed
    }

    /// Readiness and freshness of a campaign's sets, evaluated once per request.
    pub fn campaign_state<'a>(
        &'a self,
        campaign: &'a Campaign,
        loaded: &'a LoadedSets,
        overlays: &'a [Overlay],
        today: Day,
        fleet_lagging: bool,
    ) -> CampaignState<'a> {
        let mut common = Reasons::default();
        let mut warnings = Vec::new();
        if fleet_lagging {
            match campaign.fleet_lag {
                StalePolicy::Block => common.insert(Reason::FleetLag),
                StalePolicy::AllowWithWarning => warnings.push(
                    "this host lags behind the fleet stream: opt-outs taken on other hosts may be missing".to_owned(),
                ),
            }
        }
        let mut sets = Vec::with_capacity(campaign.consulted.len());
        let mut consent_ready = true;
        for (position, &id) in campaign.consulted().iter().enumerate() {
            let slot = loaded.slots.get(id).and_then(|s| s.as_deref());
            let definition = &self.sets[id];
            match slot {
                None => {
                    common.insert(Reason::NotReady);
                    if position >= campaign.block_sets.len() {
                        consent_ready = false;
                    }
                }
                Some(set) if definition.reason == Some(BlockReason::NationalRegistry) => {
                    let fresh = set.set.header().source_date.is_some_and(|date| {
                        date.days_until(today) <= i64::from(campaign.max_list_age_days)
                    });
                    if !fresh {
                        match campaign.stale_list {
                            StalePolicy::Block => common.insert(Reason::StaleList),
                            StalePolicy::AllowWithWarning => warnings.push(format!(
                                "registry '{}' copy of {} is older than {} days",
                                definition.id,
                                set.set
                                    .header()
                                    .source_date
                                    .map_or("unknown date".into(), |d| d.to_string()),
                                campaign.max_list_age_days
                            )),
                        }
                    }
                }
                Some(_) => {}
            }
            sets.push(slot);
        }
        CampaignState {
            campaign,
            common,
            overlays,
            definitions: &self.sets,
            sets,
            warnings,
            consent_ready,
            moment: None,
        }
    }
}

impl CampaignState<'_> {
    /// The instant and hints the campaign's calling windows are checked with. Without it a
    /// campaign with windows fails closed (OUTSIDE_CALLING_WINDOW, no next instant).
    pub fn at(mut self, moment: Moment) -> Self {
        self.moment = Some(moment);
        self
    }

    /// The calling-window rule for the valid number at `index` of a request. A batch passes
    /// its cache: one evaluation per place of the prefix table for the batch's instant, or per
    /// (hints, place) for numbers with hints of their own; a single request with hints
    /// evaluates them directly.
    #[inline]
    fn window_rule(
        &self,
        decision: &mut Decision,
        number: Number,
        index: usize,
        cache: Option<&mut PlaceCache>,
    ) {
        let Some(schedule) = &self.campaign.windows else {
            return;
        };
        let code = match (&self.moment, cache) {
            (Some(moment), Some(cache)) => match &moment.each {
                Some(each) => {
                    let found = each
                        .of_number
                        .get(index)
                        .and_then(|&id| Some((id, each.hints.get(usize::try_from(id).ok()?)?)));
                    match found {
                        Some((id, hints)) => cache.check_hinted(schedule, number, id, hints),
                        // Hints that do not match the batch (the edges check the count):
                        // fail closed.
                        None => WindowCode::from(Answer::Outside {
                            next_allowed_at_ms: None,
                        }),
                    }
                }
                None if moment.hints.is_empty() => cache.code(schedule, number),
                None => schedule.check(number, &moment.hints, moment.at_ms).into(),
            },
            (Some(moment), None) => schedule.check(number, &moment.hints, moment.at_ms).into(),
            (None, _) => WindowCode::from(Answer::Outside {
                next_allowed_at_ms: None,
            }),
        };
        self.apply_window(decision, code);
    }

    /// The reasons of a calling-window answer. Without branches: in a batch spread over many
    /// places the three answers come in no order a predictor could learn.
    #[inline]
    fn apply_window(&self, decision: &mut Decision, code: WindowCode) {
        apply_window_code(decision, code, self.unknown_blocks());
    }

    fn unknown_blocks(&self) -> bool {
        self.campaign.unknown_location == UnknownLocationPolicy::Block
    }

    fn definition(&self, position: usize) -> &SetDefinition {
        &self.definitions[self.campaign.consulted[position]]
    }

    fn overlay(&self, position: usize) -> &Overlay {
        &self.overlays[self.campaign.consulted[position]]
    }

    fn prefix_blocked(&self, number: Number) -> bool {
        // Most campaigns block no prefix: spare every number its digit count (a quarter of
        // the per-number decision's profile in a batch; BENCHMARKS.md, issue 18).
        if self.campaign.prefixes.is_empty() {
            return false;
        }
        let digits = number.digit_count();
        self.campaign.prefixes.iter().any(|&(prefix, length)| {
            length <= digits && number.get() / 10u64.pow(digits - length) == prefix
        })
    }

    /// The rules every number gets before any set is consulted: the reasons common to the
    /// request, INVALID_NUMBER for a parse error, BLOCKED_PREFIX for a blocked prefix.
    #[inline]
    fn first_rules<E>(&self, number: &Result<Number, E>) -> Decision {
        let mut decision = Decision {
            reasons: self.common,
            ..Decision::default()
        };
        match number {
            Ok(number) => {
                decision.number = Some(*number);
                if self.prefix_blocked(*number) {
                    decision.reasons.insert(Reason::BlockedPrefix);
                }
            }
            Err(_) => decision.reasons.insert(Reason::InvalidNumber),
        }
        decision
    }

    /// What the overlay (mutations since the snapshot) says of `number` in the set at
    /// `position`; it overrides the snapshot when it says anything.
    #[inline]
    fn overlay_says(&self, position: usize, number: Number, today: Day) -> Option<bool> {
        self.overlay(position)
            .lookup(set_key(self.definition(position), number), today)
    }

    /// The rule of a hit in the block set at `position`: the set is named and its reason given.
    #[inline]
    fn block_hit(&self, decision: &mut Decision, position: usize) {
        decision.matched |= 1 << position;
        // Positions below block_sets.len() are block sets, whose reason is always set.
        decision
            .reasons
            .insert(self.campaign.block_reasons[position]);
    }

    /// The consent rule, once every set was consulted for a valid number: a campaign that
    /// requires consent blocks a number no consent set holds (unless a consent set is missing,
    /// which NOT_READY already says).
    #[inline]
    fn consent_rule(&self, decision: &mut Decision, consented: bool) {
        if self.campaign.require_consent && self.consent_ready && !consented {
            decision.reasons.insert(Reason::NoConsent);
        }
    }

    /// The decision for one number (already parsed, or the parse error).
    pub fn decide(&self, number: Result<Number, NumberError>, today: Day) -> Decision {
        let mut decision = self.first_rules(&number);
        let Ok(number) = number else {
            return decision;
        };
        self.window_rule(&mut decision, number, 0, None);
        let blocks = self.campaign.block_sets.len();
        let mut consented = false;
        for (position, slot) in self.sets.iter().enumerate() {
            let Some(loaded) = slot else { continue };
            let hit = match self.overlay_says(position, number, today) {
                Some(said) => said,
                None => loaded
                    .set
                    .contains_key(set_key(self.definition(position), number), today),
            };
            if position < blocks {
                if hit {
                    self.block_hit(&mut decision, position);
                }
            } else {
                consented |= hit;
            }
        }
        self.consent_rule(&mut decision, consented);
        decision
    }

    /// Decisions for many numbers, with the rules of [`CampaignState::decide`], each set
    /// consulted once with a batched lookup (the loop runs per set, not per number, so the
    /// engine can keep many lookups in flight). Returns the filter counters summed over the
    /// sets consulted.
    ///
    /// Only whether each number parsed matters here, so the error type is the caller's: the
    /// daemon passes boxed errors (16 bytes a number instead of 56, written and read per
    /// number on the batch path).
    pub fn decide_batch<E>(
        &self,
        numbers: &[Result<Number, E>],
        today: Day,
        out: &mut Vec<Decision>,
    ) -> BatchStats {
        let mut stats = BatchStats::default();
        out.clear();
        let mut valid: Vec<Number> = Vec::with_capacity(numbers.len());
        let mut valid_at: Vec<usize> = Vec::with_capacity(numbers.len());
        let mut places = match (&self.campaign.windows, &self.moment) {
            (Some(schedule), Some(moment)) => {
                Some(PlaceCache::new(schedule, moment.at_ms, numbers.len()))
            }
            _ => None,
        };
        // A batch whose numbers all share the request's instant and hints (the common case)
        // gets its windows in one pass of its own below: a tight loop of table reads.
        let shared_moment = self
            .moment
            .as_ref()
            .is_some_and(|moment| moment.each.is_none() && moment.hints.is_empty());
        for (index, number) in numbers.iter().enumerate() {
            out.push(self.first_rules(number));
            if let Ok(number) = number {
                if !shared_moment {
                    self.window_rule(&mut out[index], *number, index, places.as_mut());
                }
                valid.push(*number);
                valid_at.push(index);
            }
        }
        if let (true, Some(cache), Some(schedule)) =
            (shared_moment, places.as_mut(), &self.campaign.windows)
        {
            // Locals, not `self` and `out` through the closure: the loop keeps them in
            // registers instead of reloading them after every store.
            let (decisions, unknown_blocks) = (&mut out[..], self.unknown_blocks());
            cache.each_code(schedule, &valid, |i, code| {
                apply_window_code(&mut decisions[valid_at[i]], code, unknown_blocks)
            });
        }
        let blocks = self.campaign.block_sets.len();
        let mut hits = vec![false; valid.len()];
        let mut consented = vec![false; valid.len()];
        for (position, slot) in self.sets.iter().enumerate() {
            let Some(loaded) = slot else { continue };
            let counted = loaded.set.contains_batch(&valid, today, &mut hits);
            stats.filter_hits += counted.filter_hits;
            stats.confirmed += counted.confirmed;
            if !self.overlay(position).is_empty() {
                for (hit, &number) in hits.iter_mut().zip(&valid) {
                    if let Some(said) = self.overlay_says(position, number, today) {
                        *hit = said;
                    }
                }
            }
            if position < blocks {
                for (&hit, &index) in hits.iter().zip(&valid_at) {
                    if hit {
                        self.block_hit(&mut out[index], position);
                    }
                }
            } else {
                for (seen, &hit) in consented.iter_mut().zip(&hits) {
                    *seen |= hit;
                }
            }
        }
        if self.campaign.require_consent && self.consent_ready {
            for (&seen, &index) in consented.iter().zip(&valid_at) {
                self.consent_rule(&mut out[index], seen);
            }
        }
        stats
    }
}

/// The reasons of a calling-window answer, set without a branch
/// (`CampaignState::apply_window`).
#[inline]
fn apply_window_code(decision: &mut Decision, code: WindowCode, unknown_blocks: bool) {
    decision.reasons.0 |= (u16::from(code.is_outside()) << Reason::OutsideCallingWindow as u8)
        | (u16::from(code.is_unknown() & unknown_blocks) << Reason::UnknownLocation as u8);
    decision.next_allowed_at_ms = code.next_allowed_at_ms();
}

/// The key a set stores for `number`: the number, or its keyed fingerprint.
#[inline]
pub fn set_key(definition: &SetDefinition, number: Number) -> u64 {
    match &definition.key {
        Some(key) => key.fingerprint(number),
        None => number.get(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_one_label_and_labels_are_unique() {
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        for (index, reason) in Reason::ALL.iter().enumerate() {
            // ALL lists every reason once, in discriminant order (bits and counters index it).
            assert_eq!(*reason as usize, index);
            let label = reason.label();
            assert!(!label.is_empty(), "{reason:?}");
            assert!(
                label.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{label}: upper-case words joined by '_'"
            );
        }
        let mut unique = labels.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "{labels:?}");
        // Lower case (the metrics label form) keeps them apart too.
        let mut lower: Vec<String> = labels.iter().map(|l| l.to_ascii_lowercase()).collect();
        lower.sort_unstable();
        lower.dedup();
        assert_eq!(lower.len(), labels.len());
        // Every reason fits the bit set.
        assert!(Reason::ALL.len() <= 16);
    }

    #[test]
    fn block_reasons_map_to_their_reason() {
        assert_eq!(
            Reason::from_block(BlockReason::NationalRegistry).label(),
            "NATIONAL_REGISTRY"
        );
        assert_eq!(
            Reason::from_block(BlockReason::InternalDnc),
            Reason::InternalDnc
        );
        assert_eq!(Reason::from_block(BlockReason::Erased), Reason::Erased);
    }
}
