//! Appending and closing (`POST`): content-type and JSON checks, idempotent producers,
//! `Stream-Seq`, and the atomic write of records, meta and producer state.

use std::sync::Arc;

use bytes::Bytes;

use crate::engine::{backoff, contended, is_conflict, Engine, MAX_ATTEMPTS};
use crate::error::StreamError;
use crate::json;
use crate::meta::{media_type, ProducerState, ProducerTuple, StreamMeta};
use crate::offset::MAX_POSITION;
use crate::store::{Record, StoreError, WriteSet};
use crate::time::now_ms;

/// An append request, parsed.
#[derive(Clone, Debug, Default)]
pub struct AppendRequest {
    /// The bytes to append (empty: close only).
    pub body: Bytes,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// `Stream-Closed: true`.
    pub close: bool,
    /// `Stream-Seq`.
    pub stream_seq: Option<String>,
    /// `Producer-Id`, `Producer-Epoch`, `Producer-Seq`.
    pub producer: Option<ProducerTuple>,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendStatus {
    /// Bytes were appended (and the stream closed, if asked).
    Appended,
    /// The stream was closed without appending.
    Closed,
    /// A producer retry of an append already made: nothing changed.
    Duplicate,
    /// A close of a stream already closed: nothing changed.
    AlreadyClosed,
}

/// The outcome of an append.
#[derive(Clone, Debug)]
pub struct Appended {
    /// The stream after the append.
    pub meta: Arc<StreamMeta>,
    /// What happened.
    pub status: AppendStatus,
    /// The producer's epoch and highest accepted sequence, for producer requests.
    pub producer: Option<ProducerState>,
}

/// The idempotent-producer decision for one request (the protocol's §5.2.1).
enum Verdict {
    Accept(ProducerState),
    Duplicate(ProducerState),
}

fn check_producer(state: Option<ProducerState>, p: &ProducerTuple) -> Result<Verdict, StreamError> {
    let Some(state) = state else {
        return if p.seq == 0 {
            Ok(Verdict::Accept(ProducerState {
                epoch: p.epoch,
                last_seq: 0,
            }))
        } else {
            Err(StreamError::SeqGap {
                expected: 0,
                received: p.seq,
            })
        };
    };
    if p.epoch < state.epoch {
        return Err(StreamError::StaleEpoch {
            current: state.epoch,
            received: p.epoch,
        });
    }
    if p.epoch > state.epoch {
        return if p.seq == 0 {
            Ok(Verdict::Accept(ProducerState {
                epoch: p.epoch,
                last_seq: 0,
            }))
        } else {
            Err(StreamError::BadRequest(format!(
                "a new producer epoch ({}) must start at Producer-Seq 0",
                p.epoch
            )))
        };
    }
    if p.seq <= state.last_seq {
        return Ok(Verdict::Duplicate(state));
    }
    let expected = state.last_seq.saturating_add(1);
    if p.seq == expected {
        Ok(Verdict::Accept(ProducerState {
            epoch: state.epoch,
            last_seq: p.seq,
        }))
    } else {
        Err(StreamError::SeqGap {
            expected,
            received: p.seq,
        })
    }
}

impl Engine {
    /// Appends to (and/or closes) `name`. On a shared store an append another host beat to
    /// the write is decided again on the reloaded stream (so a producer's retry through
    /// another host is a duplicate, never a second copy).
    pub async fn append(
        &self,
        name: &str,
        request: AppendRequest,
    ) -> Result<Appended, StreamError> {
        for attempt in 0..MAX_ATTEMPTS {
            match self.append_once(name, &request).await {
                Err(e) if is_conflict(&e) => backoff(attempt).await,
                other => return other,
            }
        }
        Err(contended(name))
    }

    async fn append_once(
        &self,
        name: &str,
        request: &AppendRequest,
    ) -> Result<Appended, StreamError> {
        let (slot, _) = self.lookup(name, true).await?;
        let _guard = slot.lock().await;
        let meta = slot
            .meta()
            .ok_or_else(|| StreamError::NotFound(name.to_owned()))?;
        if meta.soft_deleted {
            return Err(StreamError::Gone(name.to_owned()));
        }
        if meta.closed {
            if let Some(p) = &request.producer {
                if meta.closed_by.as_ref() == Some(p) {
                    let producer = ProducerState {
                        epoch: p.epoch,
                        last_seq: p.seq,
                    };
                    return Ok(Appended {
                        meta,
                        status: AppendStatus::Duplicate,
                        producer: Some(producer),
                    });
                }
            }
            if request.body.is_empty() && request.close {
                return Ok(Appended {
                    meta,
                    status: AppendStatus::AlreadyClosed,
                    producer: None,
                });
            }
            return Err(StreamError::Closed { tail: meta.tail });
        }
        let record = self.append_record(&meta, request)?;
        let mut producer = None;
        if let Some(p) = &request.producer {
            let state = self.store.producer(meta.id, &p.id).await?;
            match check_producer(state, p)? {
                Verdict::Accept(state) => producer = Some(state),
                Verdict::Duplicate(state) => {
                    let meta = self.reload_for_duplicate(name, meta).await?;
                    return Ok(Appended {
                        meta,
                        status: AppendStatus::Duplicate,
                        producer: Some(state),
                    });
                }
            }
        }
        if let (Some(seq), Some(last)) = (&request.stream_seq, &meta.last_seq) {
            if seq.as_bytes() <= last.as_bytes() {
                return Err(StreamError::SeqRegression {
                    last: last.clone(),
                    received: seq.clone(),
                });
            }
        }
        let mut next = (*meta).clone();
        let mut set = WriteSet::default();
        set.expected.push((name.to_owned(), Some((*meta).clone())));
        let appended = record.is_some();
        if let Some(bytes) = record {
            let end = next.tail.saturating_add(bytes.len() as u64);
            if end > MAX_POSITION {
                return Err(StreamError::BadRequest(
                    "the stream has reached its largest offset".into(),
                ));
            }
            set.records.push((
                meta.id,
                Record {
                    start: next.tail,
                    bytes,
                },
            ));
            next.tail = end;
        }
        if request.close {
            next.closed = true;
            next.closed_by = request.producer.clone();
        }
        if request.stream_seq.is_some() {
            next.last_seq = request.stream_seq.clone();
        }
        // Never backwards, whatever this host's clock says next to the host that wrote last.
        next.last_access_ms = now_ms().max(meta.last_access_ms);
        if let (Some(p), Some(state)) = (&request.producer, producer) {
            set.producers.push((meta.id, p.id.clone(), state));
        }
        set.metas.push((name.to_owned(), Some(next.clone())));
        self.commit(set).await?;
        slot.publish(Some(next));
        let meta = slot
            .meta()
            .ok_or_else(|| StreamError::NotFound(name.to_owned()))?;
        Ok(Appended {
            meta,
            status: if appended {
                AppendStatus::Appended
            } else {
                AppendStatus::Closed
            },
            producer,
        })
    }

    /// The meta a duplicate is answered with. On a shared store the producer state was read
    /// after the meta, so another host may have appended the matched message in between: the
    /// meta is reloaded (under the slot lock the caller holds) so the answer's tail is not
    /// before that message. A stream replaced meanwhile is a conflict: decided again.
    async fn reload_for_duplicate(
        &self,
        name: &str,
        meta: Arc<StreamMeta>,
    ) -> Result<Arc<StreamMeta>, StreamError> {
        if !self.shared {
            return Ok(meta);
        }
        let fresh = (self.store.load_metas(&[name.to_owned()]).await?)
            .pop()
            .flatten();
        self.apply(name, fresh);
        match self.slot(name).and_then(|s| s.meta()) {
            Some(m) if m.id == meta.id => Ok(m),
            _ => Err(StoreError::Conflict(name.to_owned()).into()),
        }
    }

    /// The record an append adds, after the content-type and (JSON) body checks; `None` for a
    /// close without a body.
    fn append_record(
        &self,
        meta: &StreamMeta,
        request: &AppendRequest,
    ) -> Result<Option<Bytes>, StreamError> {
        if request.body.is_empty() {
            return if request.close {
                Ok(None)
            } else {
                Err(StreamError::BadRequest(
                    "an append needs a body (only a close, Stream-Closed: true, may be empty)"
                        .into(),
                ))
            };
        }
        let content_type = (request.content_type.as_deref())
            .ok_or_else(|| StreamError::BadRequest("an append needs a Content-Type".into()))?;
        if !media_type(content_type).eq_ignore_ascii_case(media_type(&meta.content_type)) {
            return Err(StreamError::ContentType {
                stream: meta.content_type.clone(),
                request: content_type.to_owned(),
            });
        }
        if !meta.is_json() {
            return Ok(Some(request.body.clone()));
        }
        match json::record(&request.body)? {
            Some(record) => Ok(Some(record)),
            None => Err(StreamError::BadRequest(
                "an empty JSON array appends nothing; send at least one message".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    fn state(epoch: u64, last_seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, last_seq })
    }

    #[test]
    fn producer_rules() {
        let verdict = |s, req| match check_producer(s, &req) {
            Ok(Verdict::Accept(s)) => format!("accept {}/{}", s.epoch, s.last_seq),
            Ok(Verdict::Duplicate(s)) => format!("dup {}/{}", s.epoch, s.last_seq),
            Err(e) => format!("{} {e}", e.status()),
        };
        assert_eq!(verdict(None, p(0, 0)), "accept 0/0");
        assert_eq!(verdict(None, p(3, 0)), "accept 3/0");
        assert!(verdict(None, p(0, 1)).starts_with("409"));
        assert_eq!(verdict(state(0, 2), p(0, 3)), "accept 0/3");
        assert_eq!(verdict(state(0, 2), p(0, 1)), "dup 0/2");
        assert_eq!(verdict(state(0, 2), p(0, 2)), "dup 0/2");
        assert!(verdict(state(0, 2), p(0, 4)).starts_with("409"));
        assert!(verdict(state(1, 0), p(0, 0)).starts_with("403"));
        assert_eq!(verdict(state(1, 5), p(2, 0)), "accept 2/0");
        assert!(verdict(state(1, 5), p(2, 1)).starts_with("400"));
    }
}
