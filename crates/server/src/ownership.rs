//! Query ownership as the API shows it, when several hosts share one store.
//!
//! Each query is written by one host at a time, the holder of its lease; any host serves its
//! snapshot, change feed and status. Writes sent to another host are answered 409
//! `not-owner` naming the owner (see the error module), and the status of a query says who
//! owns it, so a client or a load balancer can find the writer without trying every host.
//! On a server that does not share its store none of these fields appear.

use liveresults_runtime::RuntimeHandle;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The `host` object of `/healthz`: this host's name and address and the queries whose lease
/// it holds; `None` when the server does not share its store.
pub(crate) fn host_json(runtime: &RuntimeHandle) -> Option<Value> {
    let host = runtime.host()?;
    Some(json!({
        "name": host.name,
        "address": host.address,
        "owned_queries": runtime.owned_queries(),
    }))
}

/// The ownership fields of one query's status: `owner` and `owner_address` (the live lease's
/// holder, `null` when no host holds it: the next write takes it) and `owned_here`. Empty
/// when the server does not share its store.
pub(crate) async fn owner_fields(
    runtime: &RuntimeHandle,
    query_id: &str,
) -> Result<Map<String, Value>, ApiError> {
    let mut fields = Map::new();
    let (Some(_), Some(leases)) = (runtime.host(), runtime.store().leases()) else {
        return Ok(fields);
    };
    let holder = leases.holder(query_id).await?;
    fields.insert(
        "owner".into(),
        holder.as_ref().map(|h| h.holder.clone()).into(),
    );
    fields.insert(
        "owner_address".into(),
        holder.as_ref().map(|h| h.address.clone()).into(),
    );
    fields.insert("owned_here".into(), runtime.owns(query_id).into());
    Ok(fields)
}

/// `owned_here` for a query of `GET /queries` (no store call per query); nothing when the
/// server does not share its store.
pub(crate) fn mark_owned(runtime: &RuntimeHandle, query_id: &str, summary: &mut Value) {
    if runtime.host().is_none() {
        return;
    }
    if let Some(map) = summary.as_object_mut() {
        map.insert("owned_here".into(), runtime.owns(query_id).into());
    }
}
