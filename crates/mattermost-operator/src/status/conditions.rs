//! Condition list maintenance: `lastTransitionTime` moves only when a condition's status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Builds a condition; `status` is `"True"`, `"False"` or `"Unknown"`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Inserts or updates one condition, keeping its transition time unless the status flips.
pub fn upsert(conds: &mut Vec<Condition>, new: Condition) {
    match conds.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) if old.status == new.status => {
            old.reason = new.reason;
            old.message = new.message;
            old.observed_generation = new.observed_generation;
        }
        Some(old) => *old = new,
        None => conds.push(new),
    }
}

/// Sets kstatus' abnormal-true pair: `Reconciling` (a change is under way) and `Stalled` (no
/// progress without a person), each False with reason `AsExpected` when `None`. Both are always
/// written so that a tool that saw them True also sees them go back to False.
pub fn set_kstatus(
    conds: &mut Vec<Condition>,
    reconciling: Option<(&str, String)>,
    stalled: Option<(&str, String)>,
    generation: Option<i64>,
    now: &Time,
) {
    for (type_, value) in [(super::RECONCILING, reconciling), (super::STALLED, stalled)] {
        let c = match value {
            Some((reason, message)) => condition(type_, true, reason, message, generation, now),
            None => condition(type_, false, "AsExpected", "", generation, now),
        };
        upsert(conds, c);
    }
}

/// Removes the condition of `type_`, if present.
pub fn remove(conds: &mut Vec<Condition>, type_: &str) {
    conds.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn find<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut conds = vec![];
        upsert(
            &mut conds,
            condition(
                "Ready",
                false,
                "Rolling",
                "1/2",
                Some(1),
                &t("2026-01-01T00:00:00Z"),
            ),
        );
        upsert(
            &mut conds,
            condition(
                "Ready",
                false,
                "Rolling",
                "2/3",
                Some(2),
                &t("2026-01-01T00:01:00Z"),
            ),
        );
        assert_eq!(conds[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(conds[0].message, "2/3");
        assert_eq!(conds[0].observed_generation, Some(2));
        upsert(
            &mut conds,
            condition("Ready", true, "Stable", "", Some(2), &t("2026-01-01T00:02:00Z")),
        );
        assert_eq!(conds[0].last_transition_time, t("2026-01-01T00:02:00Z"));
        assert_eq!(conds.len(), 1);
        remove(&mut conds, "Ready");
        assert!(find(&conds, "Ready").is_none());
    }
}
