//! Client mode of `suppressd check --server URL`: asks a running daemon, prints like the offline
//! check plus verdict and reasons.
//!
//! Numbers are masked in output unless the caller asks for them in the clear.

use crate::engine::number::{Number, mask_input};
use crate::proto::suppression_client::SuppressionClient;
use crate::proto::{CheckRequest, CheckResponse, Reason, Verdict};
use std::io::Write;

/// What to ask and how to print it.
#[derive(Debug, Clone)]
pub struct RemoteCheck {
    pub server: String,
    pub tenant: String,
    pub campaign: String,
    /// The instant to check for (unix ms); 0 is now.
    pub at_unix_ms: i64,
    pub inputs: Vec<String>,
    pub json: bool,
    pub show_numbers: bool,
}

/// A reason's name as the daemon's other answers print it: the proto value's name without its
/// `REASON_` prefix (the daemon's list of names, `Reason::label`, is held equal to these by a
/// test in `server::grpc`).
fn reason_name(value: i32) -> &'static str {
    match Reason::try_from(value) {
        Ok(Reason::Unspecified) | Err(_) => "UNKNOWN",
        Ok(reason) => {
            let name = reason.as_str_name();
            name.strip_prefix("REASON_").unwrap_or(name)
        }
    }
}

fn verdict_name(value: i32) -> &'static str {
    match Verdict::try_from(value) {
        Ok(Verdict::Allow) => "ALLOW",
        Ok(Verdict::Block) => "BLOCK",
        Ok(Verdict::Invalid) => "INVALID",
        _ => "UNKNOWN",
    }
}

/// Formats one answer: a human line, or one JSON object.
pub fn format_answer(
    input: &str,
    response: &CheckResponse,
    json: bool,
    show_numbers: bool,
) -> String {
    let shown_input = if show_numbers {
        input.to_owned()
    } else {
        mask_input(input)
    };
    let number = (!response.normalized_number.is_empty()).then(|| {
        if show_numbers {
            response.normalized_number.clone()
        } else {
            Number::parse_e164(&response.normalized_number)
                .map(|n| n.masked().to_string())
                .unwrap_or_else(|_| mask_input(&response.normalized_number))
        }
    });
    let reasons: Vec<&str> = response.reasons.iter().map(|&r| reason_name(r)).collect();
    let verdict = verdict_name(response.verdict);
    if json {
        let versions: serde_json::Map<String, serde_json::Value> = response
            .versions
            .iter()
            .map(|v| (v.set.clone(), serde_json::Value::from(v.version)))
            .collect();
        let in_set = !response.matched_sets.is_empty();
        let mut value = serde_json::json!({
            "input": shown_input,
            "number": number,
            "verdict": verdict,
            "reasons": reasons,
            "sets": response.matched_sets,
            "in_set": in_set,
            "versions": versions,
            "warnings": response.warnings,
            "tenant": response.tenant,
            "campaign": response.campaign,
            "checked_at_unix_ms": response.checked_at_unix_ms,
            "error": reasons.contains(&"INVALID_NUMBER").then_some("invalid number"),
        });
        // Only when they apply, so answers of campaigns without windows or caps keep their shape.
        if response.next_allowed_at_unix_ms > 0 {
            value["next_allowed_at_unix_ms"] = response.next_allowed_at_unix_ms.into();
        }
        if let Some(attempts) = &response.attempts {
            value["attempts_remaining"] = attempts.remaining.into();
        }
        value.to_string()
    } else {
        let mut line = format!(
            "{:<16}  {verdict:<5}",
            number.unwrap_or_else(|| format!("invalid ({shown_input})"))
        );
        if !reasons.is_empty() {
            line.push_str(&format!("  {}", reasons.join(",")));
        }
        if !response.matched_sets.is_empty() {
            line.push_str(&format!("  sets: {}", response.matched_sets.join(",")));
        }
        if response.next_allowed_at_unix_ms > 0
            && let Ok(next) = jiff::Timestamp::from_millisecond(response.next_allowed_at_unix_ms)
        {
            line.push_str(&format!("  next allowed: {next}"));
        }
        if let Some(attempts) = &response.attempts {
            line.push_str(&format!("  attempts left: {}", attempts.remaining));
        }
        for warning in &response.warnings {
            line.push_str(&format!("  warning: {warning}"));
        }
        line
    }
}

/// Asks the daemon about every input in order and prints each answer. Returns an error
/// message for failures that stop the run (cannot connect, unknown tenant...).
pub fn run(request: &RemoteCheck) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let mut client = SuppressionClient::connect(request.server.clone())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", request.server))?;
        let stdout = std::io::stdout();
        for input in &request.inputs {
            let response = client
                .check(CheckRequest {
                    number: input.clone(),
                    tenant: request.tenant.clone(),
                    campaign: request.campaign.clone(),
                    at_unix_ms: request.at_unix_ms,
                    ..Default::default()
                })
                .await
                .map_err(|status| format!("{}: {}", request.server, status.message()))?
                .into_inner();
            let line = format_answer(input, &response, request.json, request.show_numbers);
            writeln!(stdout.lock(), "{line}").map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SetVersion;

    fn response() -> CheckResponse {
        CheckResponse {
            verdict: Verdict::Block as i32,
            reasons: vec![Reason::NationalRegistry as i32],
            matched_sets: vec!["us-dnc".into()],
            normalized_number: "+12015550123".into(),
            versions: vec![SetVersion {
                set: "us-dnc".into(),
                version: 4,
            }],
            ..CheckResponse::default()
        }
    }

    #[test]
    fn human_line_masks_by_default() {
        let line = format_answer("+12015550123", &response(), false, false);
        assert!(!line.contains("2015550123"), "{line}");
        assert!(
            line.contains("BLOCK") && line.contains("NATIONAL_REGISTRY") && line.contains("us-dnc"),
            "{line}"
        );
        let clear = format_answer("+12015550123", &response(), false, true);
        assert!(clear.contains("+12015550123"), "{clear}");
    }

    #[test]
    fn json_has_the_proof_fields() {
        let line = format_answer("+12015550123", &response(), true, false);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["verdict"], "BLOCK");
        assert_eq!(value["reasons"][0], "NATIONAL_REGISTRY");
        assert_eq!(value["versions"]["us-dnc"], 4);
        assert_eq!(value["in_set"], true);
        assert!(value["error"].is_null());
        assert!(!line.contains("2015550123"), "{line}");
    }
}
