//! Logging setup (text or JSON lines, filtered by `RUST_LOG`), optional
//! OpenTelemetry trace export over OTLP/gRPC, and the Prometheus metrics.

pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keeps trace export running; [`Telemetry::shutdown`] flushes what is
/// buffered. Without an OTLP endpoint it holds nothing.
#[must_use = "dropping it without shutdown may lose the last spans"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered; call before the process exits.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            eprintln!("tenantd: flushing traces: {e}");
        }
    }
}

/// Installs the global subscriber; call once, first thing in `main`, inside
/// the Tokio runtime. `default_level` applies when `RUST_LOG` is unset. With
/// `otlp_endpoint`, spans (one per RPC, one per step attempt, with their
/// fields as attributes) are also exported there over OTLP/gRPC.
pub fn init(
    format: LogFormat,
    default_level: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_default_env()
        // The cron library announces its own setup at info.
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},tokio_cron_scheduler=warn")));
    let traces = otlp_endpoint.map(tracer_provider).transpose()?;
    // Spans are exported whatever the log level: RUST_LOG filters lines only.
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tenantd"))
            .with_filter(Targets::new().with_target("tenantd", Level::INFO))
    });
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(lines.with_filter(filter))
        .try_init()?;
    Ok(Telemetry { traces })
}

/// A batching OTLP/gRPC exporter that runs on the Tokio runtime.
fn tracer_provider(
    endpoint: &str,
) -> Result<SdkTracerProvider, Box<dyn std::error::Error + Send + Sync>> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("TENANTD_OTLP_ENDPOINT {endpoint:?}: {e}"))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("tenantd")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}
