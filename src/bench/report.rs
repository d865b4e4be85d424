//! The report of one run: every figure, as a table for a person or as one
//! JSON object (`--json`).
//!
//! The table has a row per figure: its value, its plain-SQL baseline and
//! the ratio of the two where a baseline exists, its target (on the ratio
//! when there is one) and whether the target is met; then the server's
//! sessions per phase, and any phase that left sessions open. The JSON
//! object has every figure by name, the sessions (`max_connections`,
//! `peak_connections` and `connections_left_open`, by phase) and the
//! `targets` with whether each was met.

use serde::Serialize;

use super::connections::{PhaseSessions, Sessions};
use super::list::ListReport;
use super::stats::StatsReport;
use super::targets::{self, Bound};
use super::watchers::WatchReport;
use crate::server::BoxError;

/// Every figure of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub create_tenant_rps: f64,
    pub raw_sql_tps: f64,
    pub create_vs_raw: f64,
    pub provision_tenants: usize,
    pub provision_tps: f64,
    pub raw_provision_tps: f64,
    pub provision_vs_raw: f64,
    /// Tenants of the default plan (contract included) provisioned to
    /// measure deployments: one transaction in flight per deployer makes
    /// them one per ledger close at best.
    pub contract_tenants: usize,
    pub contract_deploys_per_sec: f64,
    /// Median time of one `deploy_contract` attempt, waits for the
    /// deployer's slot included.
    pub deploy_p50_ms: f64,
    pub noop_steps: usize,
    pub noop_concurrency: usize,
    pub noop_steps_per_sec: f64,
    pub wake_samples: usize,
    pub wake_p50_ms: f64,
    pub wake_p99_ms: f64,
    pub watch: Option<WatchReport>,
    pub stats_ms_at_100k: StatsReport,
    pub list_page_p99_ms: ListReport,
    /// RecordUsage against the same statement by plain SQL, and the reads.
    pub usage: super::usage::UsageReport,
    pub placement: super::placement::PlacementReport,
    /// Event deliveries queued at once and drained to one local receiver.
    pub webhook_deliveries: usize,
    pub webhook_deliveries_per_sec: f64,
    /// Event commit to receipt, one event at a time on an idle server.
    pub webhook_samples: usize,
    pub webhook_p99_ms: f64,
    /// The server's sessions, phase by phase.
    #[serde(flatten)]
    pub sessions: Sessions,
}

/// A target checked against its figure.
#[derive(Debug, Serialize, PartialEq)]
pub struct Check {
    /// What the target is on: the figure, or its ratio to the baseline.
    pub figure: &'static str,
    pub value: f64,
    /// `>= limit` or `<= limit`.
    pub target: String,
    pub met: bool,
}

impl Report {
    /// One JSON object: the figures, the sessions and the `targets`.
    pub fn to_json(&self) -> Result<String, BoxError> {
        #[derive(Serialize)]
        struct WithTargets<'a> {
            #[serde(flatten)]
            report: &'a Report,
            targets: Vec<Check>,
        }
        Ok(serde_json::to_string(&WithTargets {
            report: self,
            targets: self.checks(),
        })?)
    }

    /// Every target, checked.
    pub fn checks(&self) -> Vec<Check> {
        self.rows().iter().filter_map(Row::check).collect()
    }

    /// The figures, then the sessions per phase, for a person to read.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let mut lines =
            vec![["figure", "value", "baseline", "ratio", "target", "met"].map(String::from)];
        for row in &rows {
            let target = match (row.target, row.baseline) {
                (Some(bound), Some(_)) => format!("ratio {bound}"),
                (Some(bound), None) => bound.to_string(),
                (None, _) => String::new(),
            };
            lines.push([
                row.figure.to_owned(),
                number(row.value),
                row.baseline
                    .map(|b| format!("{} ({})", number(b.value), b.name))
                    .unwrap_or_default(),
                row.ratio().map(number).unwrap_or_default(),
                target,
                row.check()
                    .map(|c| if c.met { "yes" } else { "no" }.to_owned())
                    .unwrap_or_default(),
            ]);
        }
        let mut out = columns(&lines, &[false, true, true, true, false, false]);
        if self.watch.is_none() {
            out.push_str("watch: skipped (--watchers 0)\n");
        }
        let checks = self.checks();
        let met = checks.iter().filter(|c| c.met).count();
        out.push_str(&format!("targets met: {met} of {}\n\n", checks.len()));

        out.push_str(&format!(
            "sessions on the server by phase (max_connections {})\n",
            self.sessions.max_connections
        ));
        let mut lines = vec![["phase", "before", "peak", "after"].map(String::from)];
        for p in &self.sessions.phases {
            lines.push([
                p.phase.to_owned(),
                p.before.to_string(),
                p.peak.to_string(),
                p.after.to_string(),
            ]);
        }
        out.push_str(&columns(&lines, &[false, true, true, true]));
        let notes: Vec<String> = self
            .sessions
            .phases
            .iter()
            .filter_map(PhaseSessions::note)
            .collect();
        for note in &notes {
            out.push_str(note);
            out.push('\n');
        }
        if self.sessions.phases.iter().all(|p| p.left_open().is_none()) {
            out.push_str("no phase left sessions open on this run's databases\n");
        }
        out
    }

    /// A row per figure, in the order they are measured.
    fn rows(&self) -> Vec<Row> {
        let mut rows = vec![
            Row::new("create_tenant_rps", self.create_tenant_rps)
                .against("raw_sql_tps", self.raw_sql_tps, "create_vs_raw")
                .target(targets::CREATE_VS_RAW),
            Row::new("provision_tps", self.provision_tps)
                .against(
                    "raw_provision_tps",
                    self.raw_provision_tps,
                    "provision_vs_raw",
                )
                .target(targets::PROVISION_VS_RAW),
            Row::new("contract_deploys_per_sec", self.contract_deploys_per_sec),
            Row::new("deploy_p50_ms", self.deploy_p50_ms),
            Row::new("noop_steps_per_sec", self.noop_steps_per_sec)
                .target(targets::NOOP_STEPS_PER_SEC),
            Row::new("wake_p50_ms", self.wake_p50_ms).target(targets::WAKE_P50_MS),
            Row::new("wake_p99_ms", self.wake_p99_ms).target(targets::WAKE_P99_MS),
        ];
        if let Some(w) = &self.watch {
            rows.extend([
                Row::new("watch.delivery_p50_ms", w.delivery_p50_ms),
                Row::new("watch.delivery_p99_ms", w.delivery_p99_ms)
                    .target(targets::WATCH_DELIVERY_P99_MS),
                Row::new("watch.rss_per_watcher_kib", w.rss_per_watcher_kib)
                    .target(targets::WATCH_RSS_PER_WATCHER_KIB),
                Row::new(
                    "watch.stream_db_connections",
                    w.stream_db_connections as f64,
                )
                .target(targets::WATCH_STREAM_DB_CONNECTIONS),
            ]);
        }
        let stats = &self.stats_ms_at_100k;
        let list = &self.list_page_p99_ms;
        rows.extend([
            Row::new(
                "stats_ms_at_100k.window_24h_p50_ms",
                stats.window_24h_p50_ms,
            ),
            Row::new(
                "stats_ms_at_100k.window_30d_p50_ms",
                stats.window_30d_p50_ms,
            )
            .target(targets::STATS_30D_P50_MS),
            Row::new("list_page_p99_ms.at_1k", list.at_1k.p99_ms),
            Row::new("list_page_p99_ms.at_100k", list.at_100k.p99_ms)
                .against("at_1k", list.at_1k.p99_ms, "list_page_p99_ms.ratio")
                .target(targets::LIST_100K_VS_1K),
            Row::new(
                "webhook_deliveries_per_sec",
                self.webhook_deliveries_per_sec,
            )
            .target(targets::WEBHOOK_DELIVERIES_PER_SEC),
            Row::new("webhook_p99_ms", self.webhook_p99_ms).target(targets::WEBHOOK_P99_MS),
            Row::new(
                "usage.usage_events_per_sec",
                self.usage.usage_events_per_sec,
            )
            .against(
                "raw_usage_tps",
                self.usage.raw_usage_tps,
                "usage.usage_vs_raw",
            )
            .target(targets::USAGE_VS_RAW),
            Row::new(
                "usage.query_usage_30d_p99_ms",
                self.usage.query_usage_30d_p99_ms,
            )
            .target(targets::QUERY_USAGE_30D_P99_MS),
            Row::new("usage.check_quota_p99_ms", self.usage.check_quota_p99_ms)
                .target(targets::CHECK_QUOTA_P99_MS),
            Row::new(
                "placement.create_rps_three_servers",
                self.placement.create_rps_three_servers,
            )
            .against(
                "create_rps_one_server",
                self.placement.create_rps_one_server,
                "placement.three_vs_one",
            )
            .target(targets::THREE_SERVERS_VS_ONE),
            Row::new("placement.move_mb_per_sec", self.placement.move_mb_per_sec)
                .against(
                    "dump_restore_mb_per_sec",
                    self.placement.dump_restore_mb_per_sec,
                    "placement.move_vs_dump_restore",
                )
                .target(targets::MOVE_VS_DUMP_RESTORE),
        ]);
        rows
    }
}

/// One line of the figures' table.
struct Row {
    figure: &'static str,
    value: f64,
    baseline: Option<Baseline>,
    /// On the ratio to the baseline where there is one, else on the value.
    target: Option<Bound>,
}

/// What a figure is compared with: the same work in plain SQL, or the
/// same call on a smaller table.
#[derive(Clone, Copy)]
struct Baseline {
    name: &'static str,
    value: f64,
    /// The name of the figure's ratio to it.
    ratio: &'static str,
}

impl Row {
    fn new(figure: &'static str, value: f64) -> Self {
        Row {
            figure,
            value,
            baseline: None,
            target: None,
        }
    }

    fn against(mut self, name: &'static str, value: f64, ratio: &'static str) -> Self {
        self.baseline = Some(Baseline { name, value, ratio });
        self
    }

    fn target(mut self, bound: Bound) -> Self {
        self.target = Some(bound);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.map(|b| self.value / b.value)
    }

    fn check(&self) -> Option<Check> {
        let bound = self.target?;
        let (figure, value) = match self.baseline {
            Some(b) => (b.ratio, self.value / b.value),
            None => (self.figure, self.value),
        };
        Some(Check {
            figure,
            value,
            target: bound.to_string(),
            met: bound.met(value),
        })
    }
}

/// A figure with as many decimals as its size needs; `-` if unmeasured.
fn number(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value.fract() == 0.0 || value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Lines of cells in aligned columns, right-aligned where `right` says.
fn columns<const N: usize>(lines: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0; N];
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths.iter().zip(right))
            .map(|(cell, (&width, &right))| {
                if right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::connections::{PhaseSessions, Sessions};
    use super::super::list::{ListFigures, ListReport};
    use super::super::stats::StatsReport;
    use super::super::watchers::WatchReport;
    use super::{Report, number};

    /// A run that meets every target.
    fn report() -> Report {
        let list = |tenants, p99_ms| ListFigures {
            tenants,
            p99_ms,
            first_page_p99_ms: p99_ms,
            later_page_p99_ms: p99_ms,
        };
        Report {
            concurrency: 16,
            create_tenant_rps: 950.0,
            raw_sql_tps: 1000.0,
            create_vs_raw: 0.95,
            provision_tenants: 50,
            provision_tps: 90.0,
            raw_provision_tps: 100.0,
            provision_vs_raw: 0.9,
            contract_tenants: 5,
            contract_deploys_per_sec: 0.8,
            deploy_p50_ms: 4100.0,
            noop_steps: 10_000,
            noop_concurrency: 1024,
            noop_steps_per_sec: 40_000.0,
            wake_samples: 50,
            wake_p50_ms: 1.5,
            wake_p99_ms: 4.0,
            watch: Some(WatchReport {
                watchers: 100,
                watched_tenants: 20,
                event_rate_per_sec: 100.0,
                events_expected: 1000,
                events_delivered: 1000,
                delivery_p50_ms: 3.0,
                delivery_p99_ms: 12.0,
                rss_before_watchers_mib: 100.0,
                rss_with_watchers_mib: 101.0,
                rss_per_watcher_kib: 10.24,
                db_connections: 9,
                db_connections_before_watchers: 9,
                stream_db_connections: 0,
            }),
            stats_ms_at_100k: StatsReport {
                tenants: 100_000,
                events: 1_000_000,
                window_24h_p50_ms: 5.0,
                window_30d_p50_ms: 30.0,
            },
            list_page_p99_ms: ListReport {
                page_size: 50,
                calls: 400,
                at_1k: list(1000, 2.0),
                at_100k: list(100_000, 2.2),
                ratio: 1.1,
            },
            usage: crate::bench::usage::UsageReport {
                stored_events: 10_000_000,
                usage_events_per_sec: 20_000.0,
                raw_usage_tps: 25_000.0,
                usage_vs_raw: 0.8,
                query_usage_30d_p99_ms: 8.0,
                check_quota_p99_ms: 0.9,
            },
            placement: crate::bench::placement::PlacementReport {
                move_mb: 100.0,
                move_mb_per_sec: 40.0,
                dump_restore_mb_per_sec: 45.0,
                move_vs_dump_restore: 0.89,
                create_rps_one_server: 2000.0,
                create_rps_three_servers: 1980.0,
                three_vs_one: 0.99,
                move_steps_ms: Default::default(),
            },
            webhook_deliveries: 2000,
            webhook_deliveries_per_sec: 4000.0,
            webhook_samples: 50,
            webhook_p99_ms: 8.0,
            sessions: Sessions {
                max_connections: 100,
                phases: vec![PhaseSessions {
                    phase: "create",
                    before: 2,
                    peak: 45,
                    after: 2,
                    own_before: 0,
                    own_after: 0,
                }],
            },
        }
    }

    /// The table's row of `figure`, split into its cells.
    fn row(table: &str, figure: &str) -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(figure))
            .unwrap_or_else(|| panic!("no row {figure} in\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_run_that_meets_every_target_reads_so() {
        let report = report();
        let checks = report.checks();
        assert_eq!(checks.len(), 17);
        assert!(checks.iter().all(|c| c.met), "{checks:?}");
        let table = report.table();
        assert!(table.contains("targets met: 17 of 17"), "{table}");
        assert!(
            table.contains("no phase left sessions open on this run's databases"),
            "{table}"
        );
    }

    #[test]
    fn a_ratio_below_its_target_is_not_met() {
        let mut report = report();
        report.create_tenant_rps = 800.0;
        let check = report
            .checks()
            .into_iter()
            .find(|c| c.figure == "create_vs_raw")
            .expect("a create_vs_raw check");
        assert_eq!((check.value, check.met), (0.8, false));
        assert_eq!(check.target, ">= 0.9");
        let table = report.table();
        assert_eq!(
            row(&table, "create_tenant_rps"),
            [
                "create_tenant_rps",
                "800",
                "1000",
                "(raw_sql_tps)",
                "0.80",
                "ratio",
                ">=",
                "0.9",
                "no"
            ]
        );
    }

    #[test]
    fn a_latency_above_its_target_is_not_met() {
        let mut report = report();
        report.wake_p99_ms = 12.5;
        assert_eq!(
            row(&report.table(), "wake_p99_ms"),
            ["wake_p99_ms", "12.5", "<=", "10", "no"]
        );
        assert!(report.table().contains("targets met: 16 of 17"));
    }

    #[test]
    fn a_page_at_100k_is_read_against_the_page_at_1k() {
        let mut report = report();
        report.list_page_p99_ms.at_100k.p99_ms = 4.4;
        let row = row(&report.table(), "list_page_p99_ms.at_100k");
        assert_eq!(
            row,
            [
                "list_page_p99_ms.at_100k",
                "4.40",
                "2",
                "(at_1k)",
                "2.20",
                "ratio",
                "<=",
                "1.5",
                "no"
            ]
        );
    }

    #[test]
    fn figures_without_a_target_show_none() {
        let table = report().table();
        assert_eq!(
            row(&table, "contract_deploys_per_sec"),
            ["contract_deploys_per_sec", "0.80"]
        );
    }

    #[test]
    fn skipped_watchers_have_no_rows_and_no_targets() {
        let mut report = report();
        report.watch = None;
        assert_eq!(report.checks().len(), 14);
        let table = report.table();
        assert!(!table.contains("watch.delivery_p99_ms"));
        assert!(table.contains("watch: skipped"));
    }

    #[test]
    fn a_phase_that_keeps_sessions_is_reported() {
        let mut report = report();
        report.sessions.phases.push(PhaseSessions {
            phase: "noop",
            before: 2,
            peak: 30,
            after: 5,
            own_before: 0,
            own_after: 3,
        });
        let table = report.table();
        assert!(
            table.contains("LEAK: noop left 3 sessions open on this run's databases"),
            "{table}"
        );
        assert!(!table.contains("no phase left sessions open"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json().expect("json")).expect("one object");
        assert_eq!(
            json["connections_left_open"],
            serde_json::json!({"noop": 3})
        );
    }

    #[test]
    fn json_keeps_every_figure_and_adds_targets_and_peaks() {
        let json: serde_json::Value =
            serde_json::from_str(&report().to_json().expect("json")).expect("one object");
        for key in [
            "concurrency",
            "create_tenant_rps",
            "raw_sql_tps",
            "create_vs_raw",
            "provision_tenants",
            "provision_tps",
            "raw_provision_tps",
            "provision_vs_raw",
            "contract_tenants",
            "contract_deploys_per_sec",
            "deploy_p50_ms",
            "noop_steps",
            "noop_concurrency",
            "noop_steps_per_sec",
            "wake_samples",
            "wake_p50_ms",
            "wake_p99_ms",
            "watch",
            "stats_ms_at_100k",
            "webhook_deliveries",
            "webhook_deliveries_per_sec",
            "webhook_samples",
            "webhook_p99_ms",
            "list_page_p99_ms",
            "usage",
            "placement",
            "max_connections",
        ] {
            assert!(json.get(key).is_some(), "no {key} in {json}");
        }
        assert_eq!(json["peak_connections"], serde_json::json!({"create": 45}));
        assert_eq!(json["connections_left_open"], serde_json::json!({}));
        assert_eq!(
            json["targets"][0],
            serde_json::json!({"figure": "create_vs_raw", "value": 0.95, "target": ">= 0.9", "met": true})
        );
    }

    #[test]
    fn numbers_carry_the_decimals_their_size_needs() {
        assert_eq!(number(31234.56), "31235");
        assert_eq!(number(41.26), "41.3");
        assert_eq!(number(0.9049), "0.90");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(f64::NAN), "-");
    }
}
