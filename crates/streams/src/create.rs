//! Creating streams and forks (`PUT`), with the protocol's idempotency: a second create with
//! the same configuration succeeds and changes nothing; a different one is a conflict.

use std::sync::Arc;

use bytes::Bytes;

use crate::engine::{
    backoff, contended, expired, is_conflict, Engine, MAX_ATTEMPTS, MAX_FORK_DEPTH,
};
use crate::error::StreamError;
use crate::json;
use crate::meta::{is_json, media_type, normalize_content_type, ForkOf, StreamMeta};
use crate::offset::MAX_POSITION;
use crate::store::{Record, WriteSet};
use crate::time::now_ms;

/// Content type of a stream created without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A create request, parsed.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// `Stream-TTL`, seconds.
    pub ttl_secs: Option<u64>,
    /// `Stream-Expires-At`, milliseconds since the epoch.
    pub expires_at_ms: Option<u64>,
    /// `Stream-Closed: true`.
    pub closed: bool,
    /// Initial content.
    pub body: Bytes,
    /// `Stream-Forked-From` and its offsets.
    pub fork: Option<ForkRequest>,
}

/// The fork part of a create.
#[derive(Clone, Debug)]
pub struct ForkRequest {
    /// The source stream's name.
    pub source: String,
    /// `Stream-Fork-Offset` (default: the source's tail).
    pub offset: Option<u64>,
    /// `Stream-Fork-Sub-Offset` (0 when absent).
    pub sub_offset: u64,
}

/// What a create did.
#[derive(Clone, Debug)]
pub enum Created {
    /// Created now (201).
    New(Arc<StreamMeta>),
    /// Already there with this configuration (200).
    Existing(Arc<StreamMeta>),
}

/// Whether `meta` is what `request` would create: content type, expiry, closure and fork.
fn same_config(meta: &StreamMeta, request: &CreateRequest) -> bool {
    let content_type = match &request.content_type {
        Some(ct) => normalize_content_type(ct).eq_ignore_ascii_case(&meta.content_type),
        None => request.fork.is_some() || meta.content_type == DEFAULT_CONTENT_TYPE,
    };
    let inherits_expiry =
        request.fork.is_some() && request.ttl_secs.is_none() && request.expires_at_ms.is_none();
    let expiry = inherits_expiry
        || (request.ttl_secs == meta.ttl_secs && request.expires_at_ms == meta.expires_at_ms);
    let fork = match (&request.fork, &meta.fork) {
        (None, None) => true,
        (Some(r), Some(m)) => {
            r.source == m.source
                && r.sub_offset == m.sub_offset
                && r.offset.is_none_or(|o| o == m.anchor)
        }
        _ => false,
    };
    content_type && expiry && fork && request.closed == meta.closed
}

impl Engine {
    /// Creates `name` (`PUT`), or confirms it exists with the same configuration. On a shared
    /// store a create another host beat to the write (same name, same id, or the fork
    /// source's count) is decided again on the reloaded state.
    pub async fn create(&self, name: &str, request: CreateRequest) -> Result<Created, StreamError> {
        for attempt in 0..MAX_ATTEMPTS {
            match self.create_once(name, &request).await {
                Err(e) if is_conflict(&e) => backoff(attempt).await,
                other => return other,
            }
        }
        Err(contended(name))
    }

    async fn create_once(
        &self,
        name: &str,
        request: &CreateRequest,
    ) -> Result<Created, StreamError> {
        if request.ttl_secs.is_some() && request.expires_at_ms.is_some() {
            return Err(StreamError::BadRequest(
                "send Stream-TTL or Stream-Expires-At, not both".into(),
            ));
        }
        // A shared store: see the name (and the fork source) as stored now, not as this host
        // last saw it — an answer given from the cache alone would not be checked by a write.
        self.refresh(name).await?;
        if let Some(fork) = &request.fork {
            self.refresh(&fork.source).await?;
        }
        let mut next_id = self.structure.lock().await;
        if let Some(slot) = self.slot(name) {
            if let Some(meta) = slot.meta() {
                if !meta.soft_deleted && expired(&slot, &meta, now_ms()) {
                    self.remove_locked(name, &mut next_id).await?;
                }
            }
        }
        if let Some(meta) = self.slot(name).and_then(|s| s.meta()) {
            if meta.soft_deleted {
                return Err(StreamError::Conflict(format!(
                    "stream {name:?} was deleted but its forks still read it; the name is not \
                     free until they are deleted"
                )));
            }
            return if same_config(&meta, request) {
                Ok(Created::Existing(meta))
            } else {
                Err(StreamError::Conflict(format!(
                    "stream {name:?} exists with another configuration"
                )))
            };
        }
        let id = *next_id;
        let now = now_ms();
        let mut set = WriteSet {
            next_id: Some(id.saturating_add(1)),
            expected: vec![(name.to_owned(), None)],
            expected_next_id: Some(id),
            ..WriteSet::default()
        };
        let mut meta = StreamMeta {
            id,
            content_type: normalize_content_type(
                request
                    .content_type
                    .as_deref()
                    .unwrap_or(DEFAULT_CONTENT_TYPE),
            ),
            created_ms: now,
            ttl_secs: request.ttl_secs,
            expires_at_ms: request.expires_at_ms,
            last_access_ms: now,
            base: 0,
            tail: 0,
            closed: request.closed,
            closed_by: None,
            last_seq: None,
            fork: None,
            forks: 0,
            soft_deleted: false,
        };
        let mut source_update = None;
        if let Some(fork) = &request.fork {
            let (source_slot, guard, source) = self.fork_source(name, fork, &mut next_id).await?;
            if let Some(ct) = &request.content_type {
                if !media_type(ct).eq_ignore_ascii_case(media_type(&source.content_type)) {
                    return Err(StreamError::Conflict(format!(
                        "the fork's content type {ct:?} is not its source's, {:?}",
                        source.content_type
                    )));
                }
            }
            let point = self.fork_point(&source, fork).await?;
            meta.content_type = source.content_type.clone();
            if request.ttl_secs.is_none() && request.expires_at_ms.is_none() {
                meta.ttl_secs = source.ttl_secs;
                meta.expires_at_ms = source.expires_at_ms;
            }
            meta.base = point;
            meta.tail = point;
            meta.fork = Some(ForkOf {
                source: fork.source.clone(),
                source_id: source.id,
                anchor: fork.offset.unwrap_or(source.tail),
                anchor_given: fork.offset.is_some(),
                sub_offset: fork.sub_offset,
            });
            set.expected
                .push((fork.source.clone(), Some((*source).clone())));
            let mut source = (*source).clone();
            source.forks = source.forks.saturating_add(1);
            set.metas.push((fork.source.clone(), Some(source.clone())));
            source_update = Some((source_slot, guard, source));
        }
        let initial = if is_json(&meta.content_type) {
            if request.body.is_empty() {
                None
            } else {
                json::record(&request.body)?
            }
        } else {
            Some(request.body.clone()).filter(|b| !b.is_empty())
        };
        if let Some(bytes) = initial {
            let end = meta.tail.saturating_add(bytes.len() as u64);
            if end > MAX_POSITION {
                return Err(StreamError::TooLarge { limit: 0 });
            }
            set.records.push((
                id,
                Record {
                    start: meta.tail,
                    bytes,
                },
            ));
            meta.tail = end;
        }
        set.metas.push((name.to_owned(), Some(meta.clone())));
        if let Err(e) = self.commit(set).await {
            if is_conflict(&e) {
                // Perhaps another host handed out this id: continue from the stored one.
                *next_id = self.store.load_next_id().await?;
            }
            return Err(e);
        }
        *next_id = id.saturating_add(1);
        if let Some((slot, guard, source)) = source_update {
            slot.publish(Some(source));
            drop(guard);
        }
        self.insert_slot(name, meta);
        let meta = self.slot(name).and_then(|s| s.meta());
        meta.map(Created::New)
            .ok_or_else(|| StreamError::NotFound(name.to_owned()))
    }

    /// The source of a fork, locked: 404 when missing, 409 when soft-deleted.
    async fn fork_source(
        &self,
        name: &str,
        fork: &ForkRequest,
        next_id: &mut u64,
    ) -> Result<
        (
            Arc<crate::engine::Slot>,
            tokio::sync::OwnedMutexGuard<()>,
            Arc<StreamMeta>,
        ),
        StreamError,
    > {
        if fork.source == name {
            return Err(StreamError::BadRequest(
                "a stream cannot fork itself".into(),
            ));
        }
        let missing = || StreamError::NotFound(fork.source.clone());
        let slot = self.slot(&fork.source).ok_or_else(missing)?;
        if slot.meta().is_some_and(|m| expired(&slot, &m, now_ms())) {
            self.remove_locked(&fork.source, next_id).await?;
        }
        let slot = self.slot(&fork.source).ok_or_else(missing)?;
        let guard = slot.lock().await;
        let source = slot.meta().ok_or_else(missing)?;
        if source.soft_deleted {
            return Err(StreamError::Conflict(format!(
                "the fork source {:?} was deleted",
                fork.source
            )));
        }
        let mut depth = 1;
        let mut above = source.fork.clone();
        while let Some(f) = above {
            depth += 1;
            if depth >= MAX_FORK_DEPTH {
                return Err(StreamError::BadRequest(format!(
                    "forks nest at most {MAX_FORK_DEPTH} deep"
                )));
            }
            above = self
                .slot(&f.source)
                .and_then(|s| s.meta())
                .and_then(|m| m.fork.clone());
        }
        Ok((slot, guard, source))
    }

    /// The position where a fork of `source` diverges: the offset (default the tail), moved
    /// forward by the sub-offset — bytes of the append that starts there, or messages of it
    /// for JSON streams; 400 when either points past the data.
    async fn fork_point(
        &self,
        source: &Arc<StreamMeta>,
        fork: &ForkRequest,
    ) -> Result<u64, StreamError> {
        let anchor = fork.offset.unwrap_or(source.tail);
        if anchor > source.tail {
            return Err(StreamError::BadRequest(format!(
                "Stream-Fork-Offset is past the source's tail ({})",
                crate::offset::format_offset(source.tail)
            )));
        }
        if fork.sub_offset == 0 {
            return Ok(anchor);
        }
        let overshoot = || {
            StreamError::BadRequest(
                "Stream-Fork-Sub-Offset points past the append at Stream-Fork-Offset".into(),
            )
        };
        let Some(record) = self.record_at(source, anchor).await? else {
            // On a shared store the source may have been deleted elsewhere since it was
            // loaded (its records dropped): that is a 404, not a bad sub-offset.
            if self.shared && anchor < source.tail {
                if let Some(gone) = self.vanished(&fork.source, source.id).await? {
                    return Err(gone);
                }
            }
            return Err(overshoot());
        };
        if record.start != anchor {
            return Err(StreamError::BadRequest(
                "Stream-Fork-Sub-Offset needs a Stream-Fork-Offset at the start of an append"
                    .into(),
            ));
        }
        let len = if source.is_json() {
            json::prefix_len(&record.bytes, fork.sub_offset).ok_or_else(overshoot)?
        } else if fork.sub_offset <= record.bytes.len() as u64 {
            fork.sub_offset
        } else {
            return Err(overshoot());
        };
        Ok(anchor.saturating_add(len))
    }
}
