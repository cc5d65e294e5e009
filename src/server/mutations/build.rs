//! What an admin asks, as a [`Mutation`]: the tenant and set a request names (empty names take
//! the defaults), numbers parsed with the tenant's parser, and the operations each kind of
//! request performs. The erasure's operations follow [`Policy::erasure_plan`], the one rule of
//! which sets an erasure touches.
//!
//! Proto-free and transport-free: the admin edge converts its request into these calls and the
//! results back into answers. Never journals anything: [`super::Mutator::submit`] does.

use super::MutationError;
use crate::config::{BlockReason, SetDefinition};
use crate::engine::date::Day;
use crate::engine::number::Number;
use crate::engine::snapshot::SetKind;
use crate::policy::{Policy, PolicyError, SetId, Tenant, set_key};
use crate::store::{Mutation, MutationKind, Op};

/// Who asked and why: recorded with the mutation (audit log), never interpreted.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub request_id: String,
    /// The channel the request came through (`phone`, `web_form`, …).
    pub source: String,
    pub reason: String,
    pub actor: String,
}

/// A change to the numbers of one tenant set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetChange {
    Suppress,
    Unsuppress,
    GrantConsent { expires: Option<Day> },
    RevokeConsent,
}

impl SetChange {
    fn kind(self) -> MutationKind {
        match self {
            SetChange::Suppress => MutationKind::Suppress,
            SetChange::Unsuppress => MutationKind::Unsuppress,
            SetChange::GrantConsent { .. } => MutationKind::GrantConsent,
            SetChange::RevokeConsent => MutationKind::RevokeConsent,
        }
    }

    /// The kind of set it changes, and which set of that kind an empty set name means.
    fn target(self) -> (SetKind, Option<BlockReason>) {
        match self {
            SetChange::Suppress | SetChange::Unsuppress => {
                (SetKind::Block, Some(BlockReason::InternalDnc))
            }
            SetChange::GrantConsent { .. } | SetChange::RevokeConsent => (SetKind::Consent, None),
        }
    }

    /// The operation on one key.
    fn op(self, key: u64) -> Op {
        match self {
            SetChange::Suppress => Op::Add {
                set: 0,
                key,
                expires: None,
            },
            SetChange::GrantConsent { expires } => Op::Add {
                set: 0,
                key,
                expires,
            },
            SetChange::Unsuppress | SetChange::RevokeConsent => Op::Remove { set: 0, key },
        }
    }
}

/// A mutation and the inputs that were left out of it (index in the request, why).
#[derive(Debug)]
pub struct Built {
    pub mutation: Mutation,
    pub invalid: Vec<(usize, String)>,
}

/// The tenant a request names: `tenant`, or the default tenant when empty.
pub fn tenant<'p>(policy: &'p Policy, tenant: &str) -> Result<&'p Tenant, MutationError> {
    let name = if tenant.is_empty() {
        policy
            .default_tenant
            .as_deref()
            .ok_or(PolicyError::NoTenant)?
    } else {
        tenant
    };
    Ok(policy
        .tenants
        .get(name)
        .ok_or_else(|| PolicyError::UnknownTenant(name.chars().take(64).collect()))?)
}

/// The tenant's set named `name`, or its first set of `kind` (and `reason`) when empty.
fn tenant_set(
    policy: &Policy,
    tenant: &str,
    name: &str,
    kind: SetKind,
    reason: Option<BlockReason>,
) -> Result<SetId, MutationError> {
    let mine = |d: &SetDefinition| d.tenant.as_deref() == Some(tenant);
    let found = if name.is_empty() {
        policy
            .sets
            .iter()
            .position(|d| mine(d) && d.kind == kind && (reason.is_none() || d.reason == reason))
    } else {
        policy.set_id(&format!("{tenant}/{name}"))
    };
    let id = found.ok_or_else(|| {
        MutationError::NotFound(format!("tenant '{tenant}' has no such {} set", kind.name()))
    })?;
    if policy.sets[id].kind != kind {
        return Err(MutationError::Invalid(format!(
            "set '{}' is not a {} set",
            policy.sets[id].id,
            kind.name()
        )));
    }
    Ok(id)
}

/// Numbers parsed with the tenant's parser; the ones that do not parse, by index.
fn parse_numbers(tenant: &Tenant, numbers: &[String]) -> (Vec<Number>, Vec<(usize, String)>) {
    let mut valid = Vec::with_capacity(numbers.len());
    let mut invalid = Vec::new();
    for (index, text) in numbers.iter().enumerate() {
        match tenant.parser.parse_fast(text) {
            Ok(number) => valid.push(number),
            Err(error) => invalid.push((index, error.to_string())),
        }
    }
    (valid, invalid)
}

/// Suppress, unsuppress, grant or revoke consent for `numbers` in one tenant set (`set`, or the
/// tenant's default set for that change when empty).
pub fn set_change(
    policy: &Policy,
    tenant_name: &str,
    set: &str,
    change: SetChange,
    numbers: &[String],
    origin: Origin,
) -> Result<Built, MutationError> {
    let tenant = tenant(policy, tenant_name)?;
    let (kind, default_reason) = change.target();
    let reason = if set.is_empty() { default_reason } else { None };
    let id = tenant_set(policy, &tenant.name, set, kind, reason)?;
    let definition = &policy.sets[id];
    if change == SetChange::Unsuppress && definition.reason == Some(BlockReason::Erased) {
        return Err(MutationError::Invalid(
            "an erasure cannot be undone by unsuppress".into(),
        ));
    }
    let (valid, invalid) = parse_numbers(tenant, numbers);
    let ops = valid
        .iter()
        .map(|&number| change.op(set_key(definition, number)))
        .collect();
    Ok(Built {
        mutation: Mutation {
            kind: Some(change.kind()),
            request_id: origin.request_id,
            tenant: tenant.name.clone(),
            source: origin.source,
            reason: origin.reason,
            actor: origin.actor,
            sets: vec![definition.id.clone()],
            ops,
            ..Mutation::default()
        },
        invalid,
    })
}

/// Erases `number` for `tenant_name`: removed from every set of the tenant but its erased sets,
/// whose keyed fingerprint is added ([`Policy::erasure_plan`]); a new receipt id.
pub fn erasure(
    policy: &Policy,
    tenant_name: &str,
    number: &str,
    origin: Origin,
) -> Result<Mutation, MutationError> {
    let tenant = tenant(policy, tenant_name)?;
    // The tenant must be able to erase at all.
    tenant_set(
        policy,
        &tenant.name,
        "",
        SetKind::Block,
        Some(BlockReason::Erased),
    )?;
    let (valid, invalid) = parse_numbers(tenant, std::slice::from_ref(&number.to_owned()));
    let Some(&number) = valid.first() else {
        return Err(MutationError::Invalid(
            invalid
                .into_iter()
                .next()
                .map_or("invalid number".into(), |(_, error)| error),
        ));
    };
    let plan = policy.erasure_plan(&tenant.name);
    let mut sets = Vec::new();
    let mut ops = Vec::new();
    for &id in &plan.remove_from {
        ops.push(Op::Remove {
            set: sets.len() as u16,
            key: set_key(&policy.sets[id], number),
        });
        sets.push(policy.sets[id].id.clone());
    }
    for &id in &plan.add_to {
        ops.push(Op::Add {
            set: sets.len() as u16,
            key: set_key(&policy.sets[id], number),
            expires: None,
        });
        sets.push(policy.sets[id].id.clone());
    }
    Ok(Mutation {
        kind: Some(MutationKind::Erase),
        request_id: origin.request_id,
        tenant: tenant.name.clone(),
        source: origin.source,
        reason: "erasure (GDPR art. 17)".into(),
        receipt_id: format!("er-{:016x}", rand::random::<u64>()),
        actor: origin.actor,
        sets,
        ops,
        ..Mutation::default()
    })
}

/// A registry change list for a global set: `additions` and `deletions` as 64-bit numbers.
pub fn change_list(
    policy: &Policy,
    set: &str,
    additions: &[u64],
    deletions: &[u64],
    source_date: &str,
    origin: Origin,
) -> Result<Built, MutationError> {
    let id = policy
        .set_id(set)
        .filter(|&id| policy.sets[id].tenant.is_none())
        .ok_or_else(|| {
            MutationError::NotFound(format!(
                "no global set '{}'",
                set.chars().take(64).collect::<String>()
            ))
        })?;
    let definition = &policy.sets[id];
    if !source_date.is_empty() {
        Day::parse(source_date).map_err(|e| MutationError::Invalid(e.to_string()))?;
    }
    let mut ops = Vec::with_capacity(additions.len() + deletions.len());
    let mut invalid = Vec::new();
    let changes = additions
        .iter()
        .map(|&v| (v, SetChange::Suppress))
        .chain(deletions.iter().map(|&v| (v, SetChange::Unsuppress)));
    for (index, (value, change)) in changes.enumerate() {
        match Number::from_u64(value) {
            Ok(number) => ops.push(change.op(set_key(definition, number))),
            Err(error) => invalid.push((index, error.to_string())),
        }
    }
    Ok(Built {
        mutation: Mutation {
            kind: Some(MutationKind::ApplyChanges),
            request_id: origin.request_id,
            tenant: String::new(),
            source: "change_list".into(),
            reason: source_date.to_owned(),
            actor: origin.actor,
            sets: vec![definition.id.clone()],
            ops,
            ..Mutation::default()
        },
        invalid,
    })
}
