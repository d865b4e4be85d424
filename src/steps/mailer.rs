//! Sending email: SMTP, or `.eml` files in a folder on the embedded default.

use std::path::PathBuf;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

use super::StepError;

/// Where emails go.
#[derive(Clone)]
pub enum Transport {
    /// A real SMTP server (`smtp://`, `smtps://user:pass@host`).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder.
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

/// The mail transport plus what every email needs.
#[derive(Clone)]
pub struct Mailer {
    pub transport: Transport,
    pub from: Mailbox,
    /// The invitation link is `<invitation_url>?tenant=<slug>&token=<token>`.
    pub invitation_url: String,
}

impl Mailer {
    /// SMTP from a URL such as `smtp://127.0.0.1:2525` or `smtps://user:pass@host`.
    pub fn smtp(url: &str, from: Mailbox, invitation_url: String) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("TENANTD_SMTP_URL is not a valid SMTP URL: {e}"))?
            .build();
        Ok(Self {
            transport: Transport::Smtp(transport),
            from,
            invitation_url,
        })
    }

    /// `.eml` files in `dir`.
    pub fn files(dir: PathBuf, from: Mailbox, invitation_url: String) -> Self {
        let transport = AsyncFileTransport::<Tokio1Executor>::new(&dir);
        Self {
            transport: Transport::Files(transport, dir),
            from,
            invitation_url,
        }
    }
}

impl Mailer {
    /// Sends a plain-text email; returns `sent`, or the `.eml` file's path.
    /// The Message-ID is derived from the tenant and `purpose`, so that a
    /// receiver can drop the duplicate of a retried send of the same text.
    pub async fn send(
        &self,
        to: Mailbox,
        subject: String,
        purpose: &str,
        tenant_id: Uuid,
        body: String,
    ) -> Result<String, StepError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{tenant_id}.{purpose}@tenantd>")))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| StepError::new(format!("building the email: {e}")))?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message)
                    .await
                    .map_err(|e| StepError::new(format!("SMTP: {e}")))?;
                Ok("sent".to_owned())
            }
            Transport::Files(files, dir) => {
                let id = files
                    .send(message)
                    .await
                    .map_err(|e| StepError::new(format!("writing the email: {e}")))?;
                let path = dir.join(format!("{id}.eml"));
                tracing::info!(%tenant_id, path = %path.display(), purpose, "email written");
                Ok(path.display().to_string())
            }
        }
    }
}

/// The mailbox of an address as stored: its domain in ASCII (IDNA), which
/// plain SMTP can carry.
pub fn recipient(address: &str) -> Result<lettre::message::Mailbox, super::StepError> {
    crate::domain::email::normalize(address)
        .ok()
        .and_then(|ascii| ascii.parse().ok())
        .ok_or_else(|| super::StepError::permanent("the admin email is not a valid address"))
}
