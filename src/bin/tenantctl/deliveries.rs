//! `tenantctl deliveries` (WebhookService): list webhook deliveries, newest
//! first, filtered by endpoint, tenant and status; `deliveries retry ID`
//! sends a FAILED one again.
//!
//! Here `--endpoint` names a webhook endpoint, not the server: `main.rs`
//! leaves it alone after `deliveries`.

use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{Delivery, DeliveryStatus, ListDeliveriesRequest, RetryDeliveryRequest};

use crate::Connection;
use crate::errors::Failure;
use crate::output::{self, Format};
use crate::webhooks::{failure, time};

/// What reads the deliveries again after a conflict.
const REREAD: &str = "tenantctl deliveries";

/// `deliveries`: the filters of the list, or `retry`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Only deliveries to this webhook endpoint (its name). Here
    /// `--endpoint` is not the server's address: use `--server` for that.
    #[arg(long, value_name = "NAME")]
    pub endpoint: Option<String>,
    /// Only deliveries about this tenant (its id).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<String>,
    /// Only deliveries in this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
    #[arg(long, default_value_t = 50)]
    pub page_size: i32,
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Follow next-page tokens and print every page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Send a FAILED delivery again: a fresh attempt schedule, the same
    /// `webhook-id`.
    Retry {
        /// The delivery's id (`msg_...`).
        id: String,
    },
}

/// `deliveries --status`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StatusFilter {
    /// Waiting for its first or next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Out of attempts, or the endpoint answered 410 Gone.
    Failed,
}

impl From<StatusFilter> for DeliveryStatus {
    fn from(status: StatusFilter) -> Self {
        match status {
            StatusFilter::Pending => DeliveryStatus::Pending,
            StatusFilter::Delivered => DeliveryStatus::Delivered,
            StatusFilter::Failed => DeliveryStatus::Failed,
        }
    }
}

pub async fn run(connection: Connection, format: Format, args: Args) -> Result<(), Failure> {
    let mut client = WebhookServiceClient::new(connection);
    if let Some(Cmd::Retry { id }) = args.cmd {
        let retried = client
            .retry_delivery(RetryDeliveryRequest { id })
            .await
            .map_err(failure(REREAD))?
            .into_inner();
        match format {
            Format::Json => println!("{}", output::json(&retried, "RetryDeliveryResponse")),
            Format::Table => println!("{}", delivery_text(&retried.delivery.unwrap_or_default())),
        }
        return Ok(());
    }
    let mut page_token = args.page_token;
    loop {
        let request = ListDeliveriesRequest {
            endpoint: args.endpoint.clone().unwrap_or_default(),
            tenant_id: args.tenant.clone().unwrap_or_default(),
            status: args.status.map_or(DeliveryStatus::Unspecified, Into::into) as i32,
            page_size: args.page_size,
            page_token: page_token.clone(),
        };
        let page = client
            .list_deliveries(request)
            .await
            .map_err(failure(REREAD))?
            .into_inner();
        match format {
            Format::Json => println!("{}", output::json(&page, "ListDeliveriesResponse")),
            Format::Table => {
                println!("{}", delivery_table(&page.deliveries));
                if !args.all && !page.next_page_token.is_empty() {
                    println!("next page: --page-token {}", page.next_page_token);
                }
            }
        }
        if !args.all || page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

fn status(value: i32) -> &'static str {
    DeliveryStatus::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("DELIVERY_STATUS_"))
        .unwrap_or("UNKNOWN")
}

/// The latest attempt's HTTP status and error, as one piece of text.
fn last(d: &Delivery) -> String {
    let http = format!("HTTP {}", d.last_http_status);
    match (d.last_http_status, d.last_error.as_str()) {
        (0, "") => "-".to_owned(),
        (0, error) => error.to_owned(),
        (_, "") => http,
        (_, error) if error == http => http,
        (_, error) => format!("{http}: {error}"),
    }
}

/// When the next attempt is due (PENDING) or when it was delivered.
fn next_or_delivered(d: &Delivery) -> String {
    time(d.next_attempt_time.as_ref().or(d.deliver_time.as_ref()))
}

/// A delivery as `key: value` lines.
fn delivery_text(d: &Delivery) -> String {
    [
        format!("id:           {}", d.id),
        format!("endpoint:     {}", d.endpoint),
        format!("tenant:       {}", d.tenant_id),
        format!("type:         {}", d.r#type),
        format!("event:        {}", d.event_id),
        format!("status:       {}", status(d.status)),
        format!("attempts:     {}", d.attempts),
        format!("last answer:  {}", last(d)),
        format!("created:      {}", time(d.create_time.as_ref())),
        format!("next attempt: {}", time(d.next_attempt_time.as_ref())),
        format!("delivered:    {}", time(d.deliver_time.as_ref())),
    ]
    .join("\n")
}

/// Deliveries as a table, one line each; NEXT/DELIVERED is when the next
/// attempt is due, or when it was delivered.
fn delivery_table(deliveries: &[Delivery]) -> String {
    let mut lines = vec![format!(
        "{:<36}  {:<16}  {:<36}  {:<22}  {:<9}  {:>8}  {:<19}  {:<19}  LAST",
        "ID", "ENDPOINT", "TENANT", "TYPE", "STATUS", "ATTEMPTS", "CREATED", "NEXT/DELIVERED"
    )];
    for d in deliveries {
        lines.push(format!(
            "{:<36}  {:<16}  {:<36}  {:<22}  {:<9}  {:>8}  {:<19}  {:<19}  {}",
            d.id,
            d.endpoint,
            d.tenant_id,
            d.r#type,
            status(d.status),
            d.attempts,
            time(d.create_time.as_ref()),
            next_or_delivered(d),
            last(d)
        ));
    }
    lines.join("\n")
}
