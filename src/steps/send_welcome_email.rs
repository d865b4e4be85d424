//! `send_welcome_email`: the admin's invitation link, by SMTP or, on the
//! embedded default, as `.eml` files in a folder. Not critical: a failure is
//! a warning and provisioning goes on.

use async_trait::async_trait;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use lettre::message::Mailbox;

use super::seed_roles_and_admin::{INVITATION_TTL, admin_user_id, hash_token, new_token};
use super::{Mailer, Output, Step, StepCtx, StepError};
use crate::db;

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
        let to: Mailbox = super::mailer::recipient(&ctx.admin_email)?;
        // Issue a fresh token: store its hash (short transaction, committed
        // before the send), then send. A resent email (an attempt retried
        // after a crash between the send and its record) supersedes the
        // last: its link is the one that works, and its Message-ID is its
        // own, so a receiver that drops duplicates does not drop it.
        let token = new_token();
        let token_hash = hash_token(&token);
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
            .bind::<Text, _>(&token_hash)
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
        let body = format!(
            "Hello,\n\nthe workspace \"{}\" is ready and you are its administrator.\n\
             Accept your invitation (valid for {INVITATION_TTL}, usable once; it replaces\n\
             any earlier one):\n\n{link}\n",
            ctx.display_name
        );
        let subject = format!("Welcome to {}", ctx.display_name);
        // Names the token by a prefix of its hash, never the token itself.
        let purpose = format!("welcome.{}", &token_hash[..16]);
        let sent = self
            .mailer
            .send(to, subject, &purpose, ctx.tenant_id, body)
            .await?;
        Ok(Output::from([("welcome_email".to_owned(), sent)]))
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        false
    }
}
