//! End-to-end: the catalog parses, runs are deterministic, and the baselines reproduce the
//! known pathologies on a small scale.

use damper_lab::metrics::RecoveryStatus;
use damper_lab::scenario::{expand, parse};
use damper_lab::{Options, catalog, load_scenarios, run_scenarios};

const SMALL: &str = r#"
name = "small"
duration_s = 24
[backend]
workers = 6
median_ms = 10
p99_ms = 50
[load]
rate = 200
deadline_ms = 800
[load.impatient]
fraction = 0.5
pause_ms = 300
[[faults]]
start_s = 8
end_s = 12
error_probability = 0.5
latency_multiplier = 3.0
"#;

#[test]
fn the_catalog_parses_and_has_every_scenario() {
    let scenarios = load_scenarios(&Options::default()).expect("catalog parses");
    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "outage",
        "partial",
        "blackout",
        "brownout",
        "overload",
        "metastable/load85-trigger10s",
        "metastable/load50-trigger2s",
        "tail",
        "flapping",
        "regime-shift",
        "fleet",
        "blip",
        "outage-long",
        "hang-ends",
        "flapping-1-5",
        "flapping-5-1",
        "flapping-fast",
        "errors-50",
        "errors-90",
        "hung-replica",
        "many-clients",
        "fleet-outage/c1000-r2",
        "fleet-blip/c1-r100",
        "fleet-errors-50/c10-r10",
        "fleet-errors-90/c100-r2",
        "fleet-hedge/c100-r100",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(catalog().len(), 25);
    // The fleet family: every cell, 1,000 clients x 100 rps included, with none, tower, damped.
    for family in [
        "fleet-outage",
        "fleet-blip",
        "fleet-errors-50",
        "fleet-errors-90",
    ] {
        let cells: Vec<_> = scenarios
            .iter()
            .filter(|s| s.name.starts_with(&format!("{family}/")))
            .collect();
        assert_eq!(cells.len(), 12, "{family}");
        assert!(names.contains(&format!("{family}/c1000-r100").as_str()));
        assert!(
            cells
                .iter()
                .all(|s| s.stacks == ["none", "tower", "damped"]),
            "{family}"
        );
    }
    // Fractional flapping phases survive expansion.
    let fast = scenarios
        .iter()
        .find(|s| s.name == "flapping-fast")
        .unwrap();
    assert_eq!(fast.faults.len(), 60);
    assert!(
        fast.faults
            .iter()
            .all(|f| (f.end - f.start - 0.5).abs() < 1e-9)
    );
}

#[test]
fn same_seed_gives_identical_json_quick() {
    let file = parse(SMALL, "small.toml").unwrap();
    let scenarios = expand(&file, true);
    let a = run_scenarios(&scenarios, 42, 2).to_json();
    let b = run_scenarios(&scenarios, 42, 1).to_json();
    assert_eq!(a, b);
    let c = run_scenarios(&scenarios, 43, 2).to_json();
    assert_ne!(a, c, "a different seed should change something");
    assert!(a.starts_with("{\n  \"scenarios\": ["));
}

#[test]
fn naive_retries_amplify_an_outage() {
    let text = SMALL
        .replace("error_probability = 0.5", "error_probability = 1.0")
        .replace("latency_multiplier = 3.0\n", "")
        .replace("[load.impatient]\nfraction = 0.5\npause_ms = 300\n", "");
    let scenarios = expand(&parse(&text, "o.toml").unwrap(), true);
    let report = run_scenarios(&scenarios, 1, 2);
    let stacks = &report.scenarios[0].stacks;
    let get = |n: &str| &stacks.iter().find(|s| s.name == n).unwrap().metrics;
    assert!(get("naive").amplification >= 3.5, "{:?}", get("naive"));
    assert!(get("none").amplification <= 1.0 + 1e-9);
    assert!(get("tower").amplification < 2.0, "{:?}", get("tower"));
}

/// The catalog's baselines reproduce the known pathologies (timelines compressed by `--quick`,
/// so this stays fast in debug builds; the full run shows the same).
#[test]
fn catalog_baselines_reproduce_known_pathologies() {
    let opts = Options {
        quick: true,
        ..Options::default()
    };
    let wanted = ["outage", "overload", "metastable/load85-trigger10s"];
    let scenarios: Vec<_> = load_scenarios(&opts)
        .unwrap()
        .into_iter()
        .filter(|s| wanted.contains(&s.name.as_str()))
        .collect();
    assert_eq!(scenarios.len(), 3);
    let report = run_scenarios(&scenarios, 1, 2);
    let metrics = |sc: &str, stack: &str| {
        report
            .scenarios
            .iter()
            .find(|s| s.name == sc)
            .and_then(|s| s.stacks.iter().find(|x| x.name == stack))
            .map(|x| x.metrics.clone())
            .unwrap()
    };
    let naive_outage = metrics("outage", "naive");
    assert!(naive_outage.amplification >= 3.5, "{naive_outage:?}");
    let meta = metrics("metastable/load85-trigger10s", "naive");
    assert_eq!(meta.recovered, Some(false), "{meta:?}");
    let none_overload = metrics("overload", "none");
    assert!(none_overload.goodput_ratio < 0.25, "{none_overload:?}");
    assert_eq!(none_overload.recovered, Some(false), "{none_overload:?}");
    assert_eq!(
        none_overload.recovery_ms_status,
        Some(RecoveryStatus::Never),
        "{none_overload:?}"
    );
    // The oracle: nothing helps in an outage (it is what `none` gets); under overload it is
    // what the backend can serve, above every stack.
    let oracle = |sc: &str| {
        report
            .scenarios
            .iter()
            .find(|s| s.name == sc)
            .unwrap()
            .oracle_goodput
    };
    let none_outage = metrics("outage", "none");
    assert!(
        (oracle("outage") - none_outage.goodput_ratio).abs() < 0.01,
        "{} vs {none_outage:?}",
        oracle("outage")
    );
    assert_eq!(
        none_outage.recovery_ms_status,
        Some(RecoveryStatus::Recovered)
    );
    let overload = report
        .scenarios
        .iter()
        .find(|s| s.name == "overload")
        .unwrap();
    for st in &overload.stacks {
        assert!(
            st.metrics.goodput_ratio <= overload.oracle_goodput,
            "{}: {} > {}",
            st.name,
            st.metrics.goodput_ratio,
            overload.oracle_goodput
        );
        let vs = st.metrics.goodput_vs_oracle.unwrap();
        assert!((vs * overload.oracle_goodput - st.metrics.goodput_ratio).abs() < 1e-3);
    }
}

/// With one replica of five down, the damped stack's per-replica gate-mode breakers take it
/// out of the balancer's choices (issue figure: goodput ≥ 99%), at almost no extra load.
#[test]
fn damped_routes_around_a_failed_replica() {
    // The whole timeline: compressed 4×, the failure lasts 7.5 s while the breakers' own
    // reaction (the patience a fast-error trip waits out) is not compressed, so it weighs
    // four times as much as in the scenario the figure is about.
    let opts = Options::default();
    let scenarios: Vec<_> = load_scenarios(&opts)
        .unwrap()
        .into_iter()
        .filter(|s| s.name == "fleet")
        .collect();
    let report = run_scenarios(&scenarios, 1, 2);
    let get = |n: &str| {
        report.scenarios[0]
            .stacks
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.metrics.clone())
            .unwrap()
    };
    let (damped, none) = (get("damped"), get("none"));
    assert!(damped.goodput_ratio >= 0.99, "{damped:?}");
    assert!(none.goodput_ratio < 0.95, "{none:?}");
    assert!(damped.amplification < 1.1, "{damped:?}");
    assert!(damped.breaker_transitions.unwrap_or(0) > 0, "{damped:?}");
}

/// In a scenario that hedges, the stacks with a hedging layer report their hedges per second
/// and the worst second's share; the others report none (not a share of zero). Tower runs
/// here without retries or an attempt timeout, so neither hedger sends a request more than
/// one hedge and no second can show more hedges than requests.
#[test]
fn only_hedging_stacks_report_a_hedge_share() {
    let text = SMALL
        .replace("[load.impatient]\nfraction = 0.5\npause_ms = 300\n", "")
        .replace(
            "error_probability = 0.5\n",
            "multiplier_probability = 0.1\n",
        )
        + "[tower]\ntimeout_ms = 0\nretry_percent = 0\n\
           hedge = { percentile = 0.9, min_data_points = 20, period_s = 2 }\n";
    let scenarios = expand(&parse(&text, "h.toml").unwrap(), true);
    let report = run_scenarios(&scenarios, 1, 2);
    for st in &report.scenarios[0].stacks {
        let m = &st.metrics;
        match st.name.as_str() {
            "none" | "naive" => {
                assert_eq!(m.hedge_share_worst_s, None, "{}: {m:?}", st.name);
                assert_eq!(st.series.hedges, None, "{}", st.name);
            }
            _ => {
                let worst = m.hedge_share_worst_s.expect("a hedging stack has a share");
                let hedges = st.series.hedges.as_ref().expect("and a series");
                assert!(hedges.iter().sum::<u64>() > 0, "{}: {hedges:?}", st.name);
                assert!(worst > 0.0 && worst <= 1.0, "{}: {m:?}", st.name);
                assert!(worst >= m.hedge_extra_load.unwrap(), "{}: {m:?}", st.name);
            }
        }
    }
}
