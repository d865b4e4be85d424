//! Raw SQL statements that each connection prepares once and reuses.
//!
//! `diesel::sql_query` never enters the connection's statement cache, so
//! PostgreSQL parses and plans it on every call; the large data-modifying
//! statements of the hot paths (CreateTenant, a batch of completions) are
//! worth planning once (the batch statement's plan alone took 2.4 ms,
//! about a tenth of a typical batch's run). A statement
//! declared with [`prepared_statement!`] has a fixed text, marks each
//! parameter with [`BIND`], and is cached like diesel's own queries.

/// Where a prepared statement's text takes its next parameter.
pub const BIND: &str = "{bind}";

/// Declares a struct that runs `$sql` with its fields as parameters: the
/// text marks each parameter with [`BIND`], in the order of the `binds`
/// list, and each field is bound once. Load its rows with
/// `diesel_async::RunQueryDsl::load` into a `QueryableByName` type.
macro_rules! prepared_statement {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> {
            $( $(#[$field_meta:meta])* $field:ident: $field_ty:ty ),* $(,)?
        }
        sql = $sql:expr;
        binds = [ $( $bind:ident: $sql_ty:ty ),* $(,)? ];
    ) => {
        $(#[$meta])*
        $vis struct $name<$lt> {
            $( $(#[$field_meta])* $field: $field_ty ),*
        }

        impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for $name<'_> {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
            ) -> diesel::QueryResult<()> {
                let sql: &str = &$sql;
                let mut parts = sql.split($crate::db::prepared::BIND);
                out.push_sql(parts.next().unwrap_or_default());
                $(
                    out.push_bind_param::<$sql_ty, _>(&self.$bind)?;
                    out.push_sql(parts.next().unwrap_or_default());
                )*
                Ok(())
            }
        }

        impl diesel::query_builder::QueryId for $name<'_> {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }

        impl diesel::query_builder::Query for $name<'_> {
            type SqlType = diesel::sql_types::Untyped;
        }
    };
}

pub(crate) use prepared_statement;

#[cfg(test)]
mod tests {
    use super::BIND;

    #[test]
    fn statements_name_each_parameter_once() {
        // The texts of the statements declared in the crate have as many
        // marks as their bind lists; a mismatch would shift parameters.
        for (sql, binds) in [
            (crate::outbox::batch::BATCH_SQL.as_str(), 9),
            (crate::db::tenants::CREATE_SQL, 22),
        ] {
            assert_eq!(sql.matches(BIND).count(), binds, "{sql}");
            assert!(!sql.contains('$'), "positional parameters left in {sql}");
        }
    }
}
