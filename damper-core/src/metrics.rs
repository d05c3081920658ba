//! Every `damper_*` metric name, in one place, so all layers name things alike.
//!
//! Conventions:
//! - names carry their unit (`_seconds`, `_total` for counters);
//! - every metric has the label [`LABEL_NAME`] (`name`), set from the layer's `.name(..)` so one
//!   process can run several stacks; layers add only the extra labels listed here;
//! - handles are registered once, when a layer is built, never per request.
//!
//! Libraries depend only on the `metrics` facade: with no recorder installed a handle costs an
//! atomic load.

/// The label every damper metric carries: which stack or layer instance it belongs to.
pub const LABEL_NAME: &str = "name";
/// Label for a breaker's target state (`closed`, `open`, `half_open`).
pub const LABEL_STATE: &str = "state";
/// Label for a shed partition.
pub const LABEL_PARTITION: &str = "partition";
/// Label for why a request was rejected.
pub const LABEL_REASON: &str = "reason";

// retry and budget
/// Counter: attempts sent by the retry layer (first attempts and retries).
pub const RETRY_ATTEMPTS_TOTAL: &str = "damper_retry_attempts_total";
/// Counter: retries sent.
pub const RETRY_RETRIES_TOTAL: &str = "damper_retry_retries_total";
/// Counter: retries wanted but refused because the budget was empty.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "damper_retry_budget_exhausted_total";
/// Gauge: the budget's balance in extra attempts.
pub const RETRY_BUDGET_BALANCE: &str = "damper_retry_budget_balance";

// breaker
/// Gauge: breaker state (0 closed, 1 half-open, 2 open).
pub const BREAKER_STATE: &str = "damper_breaker_state";
/// Counter: transitions, labelled by target [`LABEL_STATE`].
pub const BREAKER_TRANSITIONS_TOTAL: &str = "damper_breaker_transitions_total";
/// Counter: calls rejected while open.
pub const BREAKER_REJECTED_TOTAL: &str = "damper_breaker_rejected_total";

// shed
/// Gauge: the current concurrency limit.
pub const SHED_LIMIT: &str = "damper_shed_limit";
/// Gauge: requests in flight.
pub const SHED_IN_FLIGHT: &str = "damper_shed_in_flight";
/// Counter: rejections, labelled by [`LABEL_PARTITION`].
pub const SHED_REJECTED_TOTAL: &str = "damper_shed_rejected_total";
/// Histogram: time spent queued before admission.
pub const SHED_QUEUE_TIME_SECONDS: &str = "damper_shed_queue_time_seconds";
/// Gauge: the limiter's current estimate of the no-load round-trip time.
pub const SHED_MIN_RTT_SECONDS: &str = "damper_shed_min_rtt_seconds";

// hedge
/// Counter: hedge attempts sent.
pub const HEDGE_SENT_TOTAL: &str = "damper_hedge_sent_total";
/// Counter: hedges whose response won.
pub const HEDGE_WON_TOTAL: &str = "damper_hedge_won_total";
/// Gauge: the current hedge delay.
pub const HEDGE_DELAY_SECONDS: &str = "damper_hedge_delay_seconds";
/// Counter: hedges wanted but refused by the budget.
pub const HEDGE_BUDGET_DENIED_TOTAL: &str = "damper_hedge_budget_denied_total";

// adaptive timeout
/// Gauge: the current per-attempt timeout.
pub const TIMEOUT_CURRENT_SECONDS: &str = "damper_timeout_current_seconds";
/// Counter: attempts that timed out.
pub const TIMEOUT_ELAPSED_TOTAL: &str = "damper_timeout_elapsed_total";
/// Counter: requests refused because their deadline had already passed.
pub const DEADLINE_EXCEEDED_TOTAL: &str = "damper_deadline_exceeded_total";

// fault injection
/// Counter: faults injected, labelled by [`LABEL_REASON`] (`latency`, `error`, `hang`, `capacity`).
pub const FAULT_INJECTED_TOTAL: &str = "damper_fault_injected_total";

/// Every metric name above, for exporters and dashboards.
pub const ALL: &[&str] = &[
    RETRY_ATTEMPTS_TOTAL,
    RETRY_RETRIES_TOTAL,
    RETRY_BUDGET_EXHAUSTED_TOTAL,
    RETRY_BUDGET_BALANCE,
    BREAKER_STATE,
    BREAKER_TRANSITIONS_TOTAL,
    BREAKER_REJECTED_TOTAL,
    SHED_LIMIT,
    SHED_IN_FLIGHT,
    SHED_REJECTED_TOTAL,
    SHED_QUEUE_TIME_SECONDS,
    SHED_MIN_RTT_SECONDS,
    HEDGE_SENT_TOTAL,
    HEDGE_WON_TOTAL,
    HEDGE_DELAY_SECONDS,
    HEDGE_BUDGET_DENIED_TOTAL,
    TIMEOUT_CURRENT_SECONDS,
    TIMEOUT_ELAPSED_TOTAL,
    DEADLINE_EXCEEDED_TOTAL,
    FAULT_INJECTED_TOTAL,
];

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_the_convention() {
        let mut seen = std::collections::HashSet::new();
        for name in super::ALL {
            assert!(name.starts_with("damper_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(seen.insert(name), "duplicate {name}");
        }
    }
}
