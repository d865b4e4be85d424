//! `send_welcome_email`: the admin's invitation link, by SMTP or, on the
//! embedded default, as `.eml` files in a folder. Not critical: a failure is
//! a warning and provisioning goes on.

use std::path::PathBuf;

use async_trait::async_trait;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::seed_roles_and_admin::{INVITATION_TTL, admin_user_id, hash_token, new_token};
use super::{Output, Step, StepCtx, StepError};
use crate::db;

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

pub struct SendWelcomeEmail {
    mailer: Mailer,
}

impl SendWelcomeEmail {
    pub fn new(mailer: Mailer) -> Self {
        Self { mailer }
    }
}

#[async_trait]
impl Step for SendWelcomeEmail {
    fn name(&self) -> &'static str {
        "send_welcome_email"
    }

    async fn run_external(&self, ctx: &StepCtx) -> Result<Output, StepError> {
        let to: Mailbox = ctx
            .admin_email
            .parse()
            .map_err(|_| StepError::new("the admin email is not a valid address"))?;
        // Issue a fresh token: store its hash (short transaction, committed
        // before the send), then send. A resent email supersedes the last.
        let token = new_token();
        let user_id = admin_user_id(ctx.tenant_id);
        let pending = {
            let mut conn = db::conn(&ctx.tenant_db)
                .await
                .map_err(|e| StepError::new(e.to_string()))?;
            diesel::sql_query(format!(
                "UPDATE {}.invitations SET token_hash = $1, issued_at = now(), expires_at = now() + interval '{INVITATION_TTL}'
                 WHERE user_id = $2 AND used_at IS NULL AND revoked_at IS NULL",
                ctx.names.schema_ident()
            ))
            .bind::<Text, _>(hash_token(&token))
            .bind::<SqlUuid, _>(user_id)
            .execute(&mut conn)
            .await?
        };
        if pending == 0 {
            return Ok(Output::from([(
                "welcome_email".to_owned(),
                "skipped: no pending invitation".to_owned(),
            )]));
        }

        let link = format!(
            "{}?tenant={}&token={token}",
            self.mailer.invitation_url, ctx.slug
        );
        let message = Message::builder()
            .from(self.mailer.from.clone())
            .to(to)
            .subject(format!("Welcome to {}", ctx.display_name))
            // Deterministic, so a receiver can drop a duplicate of a retried send.
            .message_id(Some(format!("<{}.welcome@tenantd>", ctx.tenant_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(format!(
                "Hello,\n\nthe workspace \"{}\" is ready and you are its administrator.\n\
                 Accept your invitation (valid for {INVITATION_TTL}, usable once):\n\n{link}\n",
                ctx.display_name
            ))
            .map_err(|e| StepError::new(format!("building the email: {e}")))?;

        match &self.mailer.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message)
                    .await
                    .map_err(|e| StepError::new(format!("SMTP: {e}")))?;
                Ok(Output::from([(
                    "welcome_email".to_owned(),
                    "sent".to_owned(),
                )]))
            }
            Transport::Files(files, dir) => {
                let id = files
                    .send(message)
                    .await
                    .map_err(|e| StepError::new(format!("writing the email: {e}")))?;
                let path = dir.join(format!("{id}.eml"));
                tracing::info!(tenant_id = %ctx.tenant_id, path = %path.display(), "welcome email written");
                Ok(Output::from([(
                    "welcome_email".to_owned(),
                    path.display().to_string(),
                )]))
            }
        }
    }

    fn compensable(&self) -> bool {
        false
    }
}
