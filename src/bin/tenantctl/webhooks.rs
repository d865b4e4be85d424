//! The webhook commands (WebhookService): `tenantctl endpoint` creates,
//! shows, lists, changes and deletes webhook endpoints and rotates their
//! signing secrets; `tenantctl deliveries` (in `deliveries.rs`) lists
//! deliveries and sends a FAILED one again.
//!
//! A secret is printed only by `endpoint create` and `endpoint rotate`: the
//! server never shows it again.

use clap::{ArgGroup, Subcommand};
use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{
    CreateEndpointRequest, DeleteEndpointRequest, Endpoint, GetEndpointRequest,
    ListEndpointsRequest, RotateEndpointSecretRequest, UpdateEndpointRequest,
};

use crate::errors::{self, Failure};
use crate::output::{self, Format};
use crate::{Connection, deliveries};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage webhook endpoints: the HTTP services tenantd sends tenant
    /// events to and plan steps call.
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    /// List webhook deliveries, newest first, or send a FAILED one again
    /// (`deliveries retry ID`).
    Deliveries(deliveries::Args),
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Create an endpoint and print its signing secret, shown only this
    /// once.
    Create {
        /// Unique, `^[a-z][a-z0-9-]{1,39}$`; plans name endpoints by it.
        name: String,
        /// Where deliveries are POSTed: https (http and private addresses
        /// only if the server allows them).
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        description: String,
        /// An event type to subscribe to (`tenant.created`,
        /// `tenant.active`, ..., `step.failed`, or `*` for all); repeat for
        /// more. None: the endpoint only serves plan steps.
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
    },
    /// Show an endpoint (never its secret).
    Get {
        /// The endpoint's name.
        name: String,
    },
    /// List endpoints by name.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        /// Follow next-page tokens and print every page.
        #[arg(long)]
        all: bool,
    },
    /// Change an endpoint's URL, description, event types or whether it is
    /// disabled; only the fields given change.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        /// The endpoint's name.
        name: String,
        /// The new URL.
        #[arg(long, group = "change")]
        url: Option<String>,
        /// The new description.
        #[arg(long, group = "change")]
        description: Option<String>,
        /// Replace the subscriptions with these event types; repeat for
        /// more.
        #[arg(long = "event-type", value_name = "TYPE", group = "change")]
        event_types: Vec<String>,
        /// Remove every subscription.
        #[arg(long, conflicts_with = "event_types", group = "change")]
        clear_event_types: bool,
        /// `true` stops deliveries (pending ones wait); `false` resumes them
        /// and clears the reason the endpoint was disabled.
        #[arg(long, value_name = "BOOL", group = "change")]
        disabled: Option<bool>,
        /// Only if the endpoint still has this etag (from `endpoint get`).
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Replace an endpoint's signing secret and print the new one, shown
    /// only this once. For 24 hours deliveries carry the signatures of both
    /// the new and the old secret.
    Rotate {
        /// The endpoint's name.
        name: String,
    },
    /// Delete an endpoint and its pending deliveries.
    Delete {
        /// The endpoint's name.
        name: String,
        /// Only if the endpoint still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

/// A conflict is read again with `reread`.
pub fn failure(reread: &str) -> impl FnOnce(tonic::Status) -> Failure + '_ {
    move |status| Failure::Rpc(errors::describe(&status, reread))
}

pub async fn run(connection: Connection, format: Format, cmd: Cmd) -> Result<(), Failure> {
    let cmd = match cmd {
        Cmd::Endpoint { cmd } => cmd,
        Cmd::Deliveries(args) => return deliveries::run(connection, format, args).await,
    };
    let mut client = WebhookServiceClient::new(connection);
    match cmd {
        EndpointCmd::Create {
            name,
            url,
            description,
            event_types,
        } => {
            let reread = format!("tenantctl endpoint get {name}");
            let endpoint = Endpoint {
                name,
                url,
                description,
                event_types,
                ..Default::default()
            };
            let created = client
                .create_endpoint(CreateEndpointRequest {
                    endpoint: Some(endpoint),
                })
                .await
                .map_err(failure(&reread))?
                .into_inner();
            let name = created.endpoint.as_ref().map_or("", |e| e.name.as_str());
            let once = format!(
                "The secret is shown only once: store it with the receiver now \
                 (`tenantctl endpoint rotate {name}` replaces it)."
            );
            match format {
                Format::Json => {
                    println!("{}", output::json(&created, "CreateEndpointResponse"));
                    eprintln!("{once}");
                }
                Format::Table => {
                    println!("{}", endpoint_text(&created.endpoint.unwrap_or_default()));
                    println!("secret:       {}", created.secret);
                    println!();
                    println!("{once}");
                }
            }
        }
        EndpointCmd::Get { name } => {
            let reread = format!("tenantctl endpoint get {name}");
            let got = client
                .get_endpoint(GetEndpointRequest { name })
                .await
                .map_err(failure(&reread))?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&got, "GetEndpointResponse")),
                Format::Table => println!("{}", endpoint_text(&got.endpoint.unwrap_or_default())),
            }
        }
        EndpointCmd::List {
            page_size,
            mut page_token,
            all,
        } => loop {
            let page = client
                .list_endpoints(ListEndpointsRequest {
                    page_size,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(failure("tenantctl endpoint list"))?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&page, "ListEndpointsResponse")),
                Format::Table => {
                    println!("{}", endpoint_table(&page.endpoints));
                    if !all && !page.next_page_token.is_empty() {
                        println!("next page: --page-token {}", page.next_page_token);
                    }
                }
            }
            if !all || page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        },
        EndpointCmd::Update {
            name,
            url,
            description,
            event_types,
            clear_event_types,
            disabled,
            etag,
        } => {
            let reread = format!("tenantctl endpoint get {name}");
            let mut paths = Vec::new();
            let mut endpoint = Endpoint {
                name,
                etag,
                ..Default::default()
            };
            if let Some(url) = url {
                endpoint.url = url;
                paths.push("url".to_owned());
            }
            if let Some(description) = description {
                endpoint.description = description;
                paths.push("description".to_owned());
            }
            if !event_types.is_empty() || clear_event_types {
                endpoint.event_types = event_types;
                paths.push("event_types".to_owned());
            }
            if let Some(disabled) = disabled {
                endpoint.disabled = disabled;
                paths.push("disabled".to_owned());
            }
            let updated = client
                .update_endpoint(UpdateEndpointRequest {
                    endpoint: Some(endpoint),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await
                .map_err(failure(&reread))?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&updated, "UpdateEndpointResponse")),
                Format::Table => {
                    println!("{}", endpoint_text(&updated.endpoint.unwrap_or_default()))
                }
            }
        }
        EndpointCmd::Rotate { name } => {
            let reread = format!("tenantctl endpoint get {name}");
            let rotated = client
                .rotate_endpoint_secret(RotateEndpointSecretRequest { name })
                .await
                .map_err(failure(&reread))?
                .into_inner();
            let once = "The new secret is shown only once: store it with the receiver now. \
                        For 24 hours deliveries are signed with both it and the old one.";
            match format {
                Format::Json => {
                    println!("{}", output::json(&rotated, "RotateEndpointSecretResponse"));
                    eprintln!("{once}");
                }
                Format::Table => {
                    println!("secret:       {}", rotated.secret);
                    println!();
                    println!("{once}");
                }
            }
        }
        EndpointCmd::Delete { name, etag } => {
            let reread = format!("tenantctl endpoint get {name}");
            let deleted = client
                .delete_endpoint(DeleteEndpointRequest { name, etag })
                .await
                .map_err(failure(&reread))?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&deleted, "DeleteEndpointResponse")),
                Format::Table => println!("deleted"),
            }
        }
    }
    Ok(())
}

/// A timestamp as `output::time` prints it; `-` if unset.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    let text = output::time(t);
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

fn event_types(e: &Endpoint) -> String {
    if e.event_types.is_empty() {
        "-".to_owned()
    } else {
        e.event_types.join(",")
    }
}

/// An endpoint as `key: value` lines.
fn endpoint_text(e: &Endpoint) -> String {
    let mut lines = vec![
        format!("name:         {}", e.name),
        format!("url:          {}", e.url),
        format!("description:  {}", e.description),
        format!("event types:  {}", event_types(e)),
        format!("disabled:     {}", if e.disabled { "yes" } else { "no" }),
    ];
    if !e.disabled_reason.is_empty() {
        lines.push(format!("reason:       {}", e.disabled_reason));
    }
    lines.push(format!("created:      {}", time(e.create_time.as_ref())));
    lines.push(format!("updated:      {}", time(e.update_time.as_ref())));
    lines.push(format!("etag:         {}", e.etag));
    lines.join("\n")
}

/// Endpoints as a table, one line each.
fn endpoint_table(endpoints: &[Endpoint]) -> String {
    let mut lines = vec![format!(
        "{:<24}  {:<8}  {:<32}  URL",
        "NAME", "STATE", "EVENT TYPES"
    )];
    for e in endpoints {
        lines.push(format!(
            "{:<24}  {:<8}  {:<32}  {}",
            e.name,
            if e.disabled { "disabled" } else { "enabled" },
            event_types(e),
            e.url
        ));
    }
    lines.join("\n")
}
