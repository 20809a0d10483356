//! Leases with fencing tokens (the rules are `liveresults_core::lease`'s).
//!
//! A query's lease is its row in `<schema>.leases`: holder, address, token and `expires_at`,
//! live while `expires_at` is after the database's `clock_timestamp()` — expiry runs on the
//! database's clock, the one the commit function checks it against, never on the hosts'.
//! Tokens come from the row's `last_token`, which nothing but `acquire_lease` writes and
//! nothing deletes, so a token is never issued twice for a query id (across clears, removals
//! and re-creation).
//!
//! Why writes cannot slip past a takeover: the commit, clear and removal functions lock the
//! lease row `FOR SHARE` before checking the fence and keep the lock until they commit,
//! while `acquire_lease` locks it `FOR UPDATE`. So an acquire waits for every write that
//! checked the previous lease, and every write after the acquire sees the new token: the new
//! owner reads the query's state after the last write the old owner got in.

use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::contract_rules::validate_query_id;
use liveresults_core::lease::{LeaseClaim, LeaseHolder, LeaseOutcome, Leases};
use liveresults_core::StoreError;

use crate::codec::counter_from_sql;
use crate::error::{from_pg, from_pg_for};
use crate::PgStore;

/// The longest ttl passed to the server: 100 years.
const MAX_TTL_MS: u128 = 100 * 365 * 24 * 3600 * 1000;

/// A ttl in whole milliseconds, at least 1.
fn ttl_ms(ttl: Duration) -> i64 {
    // Clamped below i64::MAX, so the conversion cannot fail.
    i64::try_from(ttl.as_millis().clamp(1, MAX_TTL_MS)).unwrap_or(i64::MAX)
}

/// A caller's token as stored: tokens are at most `i64::MAX`, so a larger one matches no
/// lease (and -1 matches none either).
pub(crate) fn token_to_sql(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(-1)
}

fn token_what(query_id: &str) -> impl FnOnce() -> String + '_ {
    move || format!("lease of query {query_id:?}")
}

#[async_trait]
impl Leases for PgStore {
    async fn acquire(
        &self,
        query_id: &str,
        claim: LeaseClaim<'_>,
    ) -> Result<LeaseOutcome, StoreError> {
        validate_query_id(query_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql().acquire)
            .await
            .map_err(from_pg)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &query_id.as_bytes(),
                    &claim.holder,
                    &claim.address,
                    &ttl_ms(claim.ttl),
                ],
            )
            .await
            .map_err(|e| from_pg_for(query_id, e))?;
        let granted: bool = row.try_get(0).map_err(from_pg)?;
        let token: i64 = row.try_get(3).map_err(from_pg)?;
        let token = counter_from_sql(token_what(query_id), token)?;
        if granted {
            return Ok(LeaseOutcome::Granted { token });
        }
        let left: i64 = row.try_get(4).map_err(from_pg)?;
        Ok(LeaseOutcome::Held(LeaseHolder {
            holder: row.try_get(1).map_err(from_pg)?,
            address: row.try_get(2).map_err(from_pg)?,
            token,
            remaining: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        }))
    }

    async fn renew(&self, query_id: &str, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        validate_query_id(query_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql().renew)
            .await
            .map_err(from_pg)?;
        let updated = client
            .execute(
                &statement,
                &[&query_id.as_bytes(), &token_to_sql(token), &ttl_ms(ttl)],
            )
            .await
            .map_err(from_pg)?;
        Ok(updated == 1)
    }

    async fn release(&self, query_id: &str, token: u64) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql().release)
            .await
            .map_err(from_pg)?;
        client
            .execute(&statement, &[&query_id.as_bytes(), &token_to_sql(token)])
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    async fn holder(&self, query_id: &str) -> Result<Option<LeaseHolder>, StoreError> {
        validate_query_id(query_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql().holder)
            .await
            .map_err(from_pg)?;
        let Some(row) = client
            .query_opt(&statement, &[&query_id.as_bytes()])
            .await
            .map_err(from_pg)?
        else {
            return Ok(None);
        };
        let token: i64 = row.try_get(2).map_err(from_pg)?;
        let left: i64 = row.try_get(3).map_err(from_pg)?;
        Ok(Some(LeaseHolder {
            holder: row.try_get(0).map_err(from_pg)?,
            address: row.try_get(1).map_err(from_pg)?,
            token: counter_from_sql(token_what(query_id), token)?,
            remaining: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        }))
    }
}
