//! `GET /ui/api/queries?limit=N&after=ID`: one page of every query's health, for the
//! console's queries page (and any dashboard): what `GET /queries` says of each query, plus
//! when its last commit was seen and the upstream source time of its newest event.
//!
//! Bounded: at most [`MAX_LIMIT`] queries per answer (default [`DEFAULT_LIMIT`]), in id
//! order; `next` names the id to pass as `after` for the following page, and `total` and
//! `stopped` count every query, so the console can say what it is not showing.
//!
//! `last_commit_ms` is the runtime's time of this host's last commit to the query. A query
//! this host does not commit to (another host owns it, or nothing arrived since a restart)
//! has none, so the [`CommitClock`] notes the time at which an answer first saw its commit
//! count or position change: exact to the interval between two requests (the console asks
//! every second), and `null` until a change has been seen. It holds one small entry per query
//! the server knows, and forgets queries that are gone.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Where the overview is served.
pub const PATH: &str = "/ui/api/queries";
/// Queries per answer when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 200;
/// Most queries per answer, whatever `limit` asks.
pub const MAX_LIMIT: usize = 1000;

/// The query string.
#[derive(Debug, Deserialize)]
pub struct Params {
    /// Queries per answer (1 to [`MAX_LIMIT`]).
    limit: Option<usize>,
    /// Start after this query id (the previous answer's `next`).
    after: Option<String>,
}

/// What a query looked like when last seen, and when that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    mark: (u64, Option<u64>, Option<u64>),
    changed_ms: Option<u64>,
}

/// When each query's last commit was first seen (see the module docs).
#[derive(Debug, Default)]
pub struct CommitClock {
    seen: Mutex<HashMap<String, Seen>>,
}

impl CommitClock {
    /// Records `mark` (epoch, sequence, commits) for `query_id` at `now_ms`; returns the time
    /// its last change was seen. The first sighting sets no time: the commit that made the
    /// mark may be hours old.
    fn observe(
        &self,
        query_id: &str,
        mark: (u64, Option<u64>, Option<u64>),
        now_ms: u64,
    ) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(query_id) {
            Some(entry) if entry.mark == mark => entry.changed_ms,
            Some(entry) => {
                entry.mark = mark;
                entry.changed_ms = Some(now_ms);
                entry.changed_ms
            }
            None => {
                seen.insert(
                    query_id.to_owned(),
                    Seen {
                        mark,
                        changed_ms: None,
                    },
                );
                None
            }
        }
    }

    /// Forgets queries not in `known` (purged), so the clock never outgrows the query list.
    fn retain(&self, known: &[String]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() > known.len() {
            let known: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
            seen.retain(|id, _| known.contains(id.as_str()));
        }
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The handler (wired by [`super::api_routes`] with the router's clock).
pub async fn queries(
    State(state): State<AppState>,
    Query(params): Query<Params>,
    clock: &CommitClock,
) -> Result<Json<Value>, ApiError> {
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(0) => {
            return Err(ApiError::BadRequest {
                detail: format!("limit must be between 1 and {MAX_LIMIT}"),
            })
        }
        Some(n) => n.min(MAX_LIMIT),
    };
    // Everything GET /queries says, in id order: one place decides which queries exist.
    let Json(all) = crate::queries::list(State(state.clone())).await?;
    let id_of = |q: &Value| q["query_id"].as_str().unwrap_or_default().to_owned();
    let ids: Vec<String> = all.iter().map(id_of).collect();
    clock.retain(&ids);
    let total = all.len();
    let stopped = all.iter().filter(|q| q["state"] == "stopped").count();
    let start = match &params.after {
        Some(after) => ids.partition_point(|id| id.as_str() <= after.as_str()),
        None => 0,
    };
    let runtime = &state.inner.runtime;
    let now = now_ms();
    let mut page = Vec::with_capacity(limit.min(total));
    for mut query in all.into_iter().skip(start).take(limit) {
        let id = id_of(&query);
        let mark = (
            query["epoch"].as_u64().unwrap_or(0),
            query["sequence"].as_u64(),
            query["commits"].as_u64(),
        );
        let changed = clock.observe(&id, mark, now);
        let status = runtime.status(&id);
        let source_time = status.as_ref().and_then(|s| s.source_time_ms);
        // The runtime's own time of this host's last commit; the observed change of position
        // for queries this host has not committed to (another host writes them, or nothing
        // arrived since a restart).
        let last_commit = status.and_then(|s| s.last_commit_ms).or(changed);
        if let Some(map) = query.as_object_mut() {
            map.insert("last_commit_ms".into(), last_commit.into());
            map.insert("source_time_ms".into(), source_time.into());
        }
        page.push(query);
    }
    let end = start.saturating_add(page.len());
    let next = (end < total)
        .then(|| ids.get(end.saturating_sub(1)).cloned())
        .flatten();
    Ok(Json(json!({
        "queries": page,
        "total": total,
        "stopped": stopped,
        "next": next,
        "now_ms": now,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_times_changes_not_first_sightings_and_forgets_the_gone() {
        let clock = CommitClock::default();
        assert_eq!(clock.observe("q", (0, Some(1), Some(1)), 10), None);
        assert_eq!(clock.observe("q", (0, Some(1), Some(1)), 20), None);
        assert_eq!(clock.observe("q", (0, Some(2), Some(2)), 30), Some(30));
        assert_eq!(clock.observe("q", (0, Some(2), Some(2)), 40), Some(30));
        // A clear changes the epoch and empties the sequence: that is a change too.
        assert_eq!(clock.observe("q", (1, None, Some(2)), 50), Some(50));
        clock.observe("gone", (0, None, None), 60);
        clock.retain(&["q".to_owned()]);
        let seen = clock.seen.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["q"]);
    }
}
