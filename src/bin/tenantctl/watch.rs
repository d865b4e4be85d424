//! `tenantctl watch`: follows StreamProvisioningStatus. On a terminal, a
//! live line per step (a spinner while it runs, its outcome when done) under
//! the event log; otherwise, or with `--output json`, one line per message.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tenantd::proto::stream_provisioning_status_response::Update;
use tenantd::proto::{Event, EventKind, StreamProvisioningStatusResponse, Tenant, TenantState};

use crate::output::{self, Format};

/// Where the watched tenant is; decides the exit status.
pub struct Watched {
    pub state: i32,
}

impl Watched {
    /// The states `watch` reports as failure.
    pub fn failed(&self) -> bool {
        matches!(
            TenantState::try_from(self.state),
            Ok(TenantState::Failed | TenantState::Cancelled | TenantState::NeedsAttention)
        )
    }
}

/// Prints what the stream sends, in the chosen form.
pub enum Display {
    Lines(Format),
    Live(Live),
}

impl Display {
    pub fn new(format: Format) -> Self {
        if format == Format::Table && std::io::stdout().is_terminal() {
            Display::Live(Live::new())
        } else {
            Display::Lines(format)
        }
    }

    pub fn show(&mut self, message: &StreamProvisioningStatusResponse, watched: &mut Watched) {
        match &message.update {
            Some(Update::Snapshot(s)) => {
                if let Some(t) = &s.tenant {
                    watched.state = t.state;
                }
            }
            Some(Update::Event(e)) => watched.state = e.state,
            None => {}
        }
        match self {
            Display::Lines(Format::Json) => {
                println!(
                    "{}",
                    output::json(message, "StreamProvisioningStatusResponse")
                )
            }
            Display::Lines(Format::Table) => match &message.update {
                Some(Update::Snapshot(s)) => {
                    println!(
                        "{}",
                        output::tenant_text(&s.tenant.clone().unwrap_or_default())
                    )
                }
                Some(Update::Event(e)) => println!("{}", event_line(e)),
                None => {}
            },
            Display::Live(live) => live.show(message),
        }
    }

    pub fn finish(self) {
        if let Display::Live(live) = self {
            live.finish();
        }
    }
}

fn event_line(e: &Event) -> String {
    let kind = EventKind::try_from(e.kind)
        .map(|k| k.as_str_name().trim_start_matches("EVENT_KIND_"))
        .unwrap_or("UNKNOWN");
    format!("#{:<8} {:<24} {:<22} {}", e.id, kind, e.step, e.message)
}

/// One progress line per step and one for the tenant.
pub struct Live {
    multi: MultiProgress,
    tenant: ProgressBar,
    steps: Vec<(String, ProgressBar)>,
}

const TICK: Duration = Duration::from_millis(100);

impl Live {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let tenant = multi.add(ProgressBar::new_spinner());
        tenant.set_style(ProgressStyle::with_template("{prefix:.bold} {msg}").expect("template"));
        Live {
            multi,
            tenant,
            steps: Vec::new(),
        }
    }

    fn show(&mut self, message: &StreamProvisioningStatusResponse) {
        match &message.update {
            Some(Update::Snapshot(s)) => self.snapshot(&s.tenant.clone().unwrap_or_default()),
            Some(Update::Event(e)) => self.event(e),
            None => {}
        }
    }

    fn snapshot(&mut self, t: &Tenant) {
        self.tenant.set_prefix(format!("{} ({})", t.slug, t.id));
        self.tenant.set_message(output::state(t.state).to_owned());
        for step in &t.steps {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(running_style());
            bar.set_prefix(step.name.clone());
            let status = output::step_status(step.status);
            if status == "RUNNING" || status == "COMPENSATING" {
                bar.enable_steady_tick(TICK);
            }
            bar.set_message(format!(
                "{} (attempts {}/{})",
                status.to_lowercase(),
                step.attempts,
                step.max_attempts
            ));
            self.steps.push((step.name.clone(), bar));
        }
    }

    fn event(&mut self, e: &Event) {
        let _ = self.multi.println(event_line(e));
        self.tenant.set_message(output::state(e.state).to_owned());
        let Some((_, bar)) = self.steps.iter().find(|(name, _)| *name == e.step) else {
            return;
        };
        let kind = EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified);
        match kind {
            EventKind::StepStarted | EventKind::CompensationStarted => {
                bar.set_style(running_style());
                bar.enable_steady_tick(TICK);
                bar.set_message(format!("{} (attempt {})", e.message, e.attempt));
            }
            EventKind::StepRetrying => bar.set_message(format!("retrying: {}", e.message)),
            EventKind::StepSucceeded => settle(bar, "✓ succeeded".to_owned()),
            EventKind::StepFailed | EventKind::CompensationFailed => {
                settle(bar, format!("✗ {}", e.message))
            }
            EventKind::StepWarning => settle(bar, format!("! {}", e.message)),
            EventKind::CompensationSucceeded => settle(bar, "↶ undone".to_owned()),
            _ => {}
        }
    }

    fn finish(self) {
        for (_, bar) in &self.steps {
            bar.disable_steady_tick();
            bar.abandon();
        }
        self.tenant.abandon();
    }
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template("  {spinner} {prefix:<24} {msg}").expect("template")
}

/// A step that is done for now: no spinner, its outcome.
fn settle(bar: &ProgressBar, message: String) {
    bar.disable_steady_tick();
    bar.set_style(ProgressStyle::with_template("    {prefix:<24} {msg}").expect("template"));
    bar.set_message(message);
}
