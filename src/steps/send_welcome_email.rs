//! `send_welcome_email`: the admin's invitation link, and the tenant's
//! first API key if `issue_api_key` made one, by SMTP or, on the embedded
//! default, as `.eml` files in a folder. Not critical: a failure is a
//! warning and provisioning goes on.
//!
//! The key waits sealed in its row until an email carrying it has been
//! handed to the mail server; then the sealed copy is erased, and only the
//! key's hash remains.

use async_trait::async_trait;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use lettre::message::Mailbox;

use super::seed_roles_and_admin::{INVITATION_TTL, admin_user_id, hash_token, new_token};
use super::{Mailer, Output, Step, StepCtx, StepError};
use crate::db;

pub struct SendWelcomeEmail {
    mailer: Mailer,
    keys: std::sync::Arc<crate::api_keys::ApiKeys>,
    pool: crate::db::DbPool,
}

impl SendWelcomeEmail {
    pub fn new(
        mailer: Mailer,
        keys: std::sync::Arc<crate::api_keys::ApiKeys>,
        pool: crate::db::DbPool,
    ) -> Self {
        Self { mailer, keys, pool }
    }

    /// The tenant's key awaiting delivery, opened.
    async fn key_to_deliver(
        &self,
        tenant: uuid::Uuid,
    ) -> Result<Option<(uuid::Uuid, secrecy::SecretString)>, StepError> {
        if !self.keys.enabled() {
            return Ok(None);
        }
        let failed = |e: crate::error::Error| StepError::new(e.to_string());
        let mut conn = db::conn(&self.pool).await.map_err(failed)?;
        let Some((id, sealed)) = db::api_keys::delivery(&mut conn, tenant)
            .await
            .map_err(failed)?
        else {
            return Ok(None);
        };
        let text = self
            .keys
            .open_delivery(id, &sealed)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        Ok(Some((id, text)))
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
        let key = self.key_to_deliver(ctx.tenant_id).await?;
        if pending == 0 && key.is_none() {
            return Ok(Output::from([(
                "welcome_email".to_owned(),
                "skipped: no pending invitation".to_owned(),
            )]));
        }

        let link = format!(
            "{}?tenant={}&token={token}",
            self.mailer.invitation_url, ctx.slug
        );
        let mut body = format!(
            "Hello,\n\nthe workspace \"{}\" is ready and you are its administrator.\n",
            ctx.display_name
        );
        if pending > 0 {
            body.push_str(&format!(
                "Accept your invitation (valid for {INVITATION_TTL}, usable once; it replaces\n\
                 any earlier one):\n\n{link}\n"
            ));
        }
        if let Some((_, text)) = &key {
            body.push_str(&format!(
                "\nYour API key (this email is the only copy: we keep only its hash, so\n\
                 store it now; revoke it and make another if it is ever exposed):\n\n{}\n",
                secrecy::ExposeSecret::expose_secret(text)
            ));
        }
        let subject = format!("Welcome to {}", ctx.display_name);
        // Names the token by a prefix of its hash, never the token itself.
        let purpose = format!("welcome.{}", &token_hash[..16]);
        let sent = self
            .mailer
            .send(to, subject, &purpose, ctx.tenant_id, body)
            .await?;
        if let Some((id, _)) = key {
            // Handed over: the sealed copy goes. A crash before this sends
            // the same key again.
            let failed = |e: crate::error::Error| StepError::new(e.to_string());
            let mut conn = db::conn(&self.pool).await.map_err(failed)?;
            db::api_keys::delivered(&mut conn, id)
                .await
                .map_err(failed)?;
        }
        Ok(Output::from([("welcome_email".to_owned(), sent)]))
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        false
    }
}
