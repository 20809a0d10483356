//! A durable reaction that appends every delivery to an NDJSON file.
//!
//! Lines: `{"type":"reset",...}`, `{"type":"snapshot","rows":[...]}`,
//! `{"type":"snapshot_done","sequence":N}`, `{"type":"change","first_sequence":F,
//! "sequence":N,"events":[...]}`. The file is its own checkpoint of record: at open it is read
//! back (a torn last line from a crash is cut off) and deliveries it already holds are skipped,
//! so a crash between the write and the runtime's checkpoint never duplicates a line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use liveresults_core::row::Value;
use liveresults_core::signature::hash_value;
use serde_json::{json, Value as Json};
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::error::ReactionError;
use crate::reaction::{ChangeEvent, Delivery, Reaction, RowChange};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Written {
    epoch: u64,
    sequence: Option<u64>,
}

/// Appends deliveries to an NDJSON file, exactly once per committed change.
#[derive(Debug)]
pub struct NdjsonLog {
    id: String,
    path: PathBuf,
    state: Mutex<(File, HashMap<String, Written>)>,
}

impl NdjsonLog {
    /// Opens (creating) the log at `path`, reading back what it already holds.
    pub async fn open(id: impl Into<String>, path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_owned();
        let existing = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Everything after the last newline is a torn write from a crash: cut it off.
        let complete = existing
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let mut written: HashMap<String, Written> = HashMap::new();
        for line in existing[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let Ok(value) = serde_json::from_slice::<Json>(line) else {
                continue;
            };
            let query = value["query_id"].as_str().unwrap_or_default().to_owned();
            let entry = written.entry(query).or_default();
            match value["type"].as_str() {
                Some("reset") => {
                    *entry = Written {
                        epoch: value["epoch"].as_u64().unwrap_or(0),
                        sequence: None,
                    }
                }
                Some("snapshot_done") | Some("change") => {
                    entry.sequence = value["sequence"].as_u64();
                }
                _ => {}
            }
            if let Some(epoch) = value["epoch"].as_u64() {
                entry.epoch = epoch;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(&path)
            .await?;
        file.set_len(complete as u64).await?;
        let mut file = file;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::End(0)).await?;
        Ok(NdjsonLog {
            id: id.into(),
            path,
            state: Mutex::new((file, written)),
        })
    }

    fn line(delivery: &Delivery) -> Json {
        match delivery {
            Delivery::Reset { query_id, epoch } => {
                json!({"type": "reset", "query_id": query_id, "epoch": epoch})
            }
            Delivery::SnapshotRows { query_id, rows } => {
                let rows: Vec<Json> = rows
                    .iter()
                    .map(|(sig, row)| json!({"signature": sig, "row": row.to_json()}))
                    .collect();
                json!({"type": "snapshot", "query_id": query_id, "rows": rows})
            }
            Delivery::SnapshotDone { query_id, sequence } => {
                json!({"type": "snapshot_done", "query_id": query_id, "sequence": sequence})
            }
            Delivery::Change(change) => {
                let events: Vec<Json> = change
                    .events
                    .iter()
                    .map(|event| match event {
                        ChangeEvent::Rows { sequence, changes } => {
                            let mut upserts = Vec::new();
                            let mut deletes = Vec::new();
                            for c in changes {
                                match c {
                                    RowChange::Upsert { signature, row } => upserts.push(
                                        json!({"signature": signature, "row": row.to_json()}),
                                    ),
                                    RowChange::Delete { signature } => {
                                        deletes.push(json!(signature));
                                    }
                                }
                            }
                            json!({"sequence": sequence, "upserts": upserts, "deletes": deletes})
                        }
                        ChangeEvent::Control { sequence, signal } => {
                            json!({"sequence": sequence, "control": signal.as_str()})
                        }
                    })
                    .collect();
                json!({"type": "change", "query_id": change.query_id, "epoch": change.epoch,
                       "first_sequence": change.span.first, "sequence": change.span.last, "events": events})
            }
        }
    }
}

#[async_trait]
impl Reaction for NdjsonLog {
    fn id(&self) -> &str {
        &self.id
    }

    fn durable(&self) -> bool {
        true
    }

    /// The log's path: a different file does not hold the state the checkpoint describes.
    /// Hashed with the documented, golden-tested xxh3 value hash rather than std's
    /// `DefaultHasher`, whose output may change between Rust releases — which would make
    /// every checkpoint look stale after a toolchain upgrade (a rebuild, or under `Strict` a
    /// failure).
    fn config_hash(&self) -> u64 {
        hash_value(&Value::String(self.path.to_string_lossy().into_owned()))
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), ReactionError> {
        let mut guard = self.state.lock().await;
        let (file, written) = &mut *guard;
        let entry = written.entry(delivery.query_id().to_owned()).or_default();
        if let Delivery::Change(change) = delivery {
            let seen = change.epoch == entry.epoch
                && entry.sequence.is_some_and(|s| change.span.last <= s);
            if seen {
                return Ok(()); // already in the file: a redelivery after a crash
            }
        }
        let mut line = serde_json::to_vec(&Self::line(delivery))
            .map_err(|e| ReactionError::new(&self.id, e))?;
        line.push(b'\n');
        file.write_all(&line)
            .await
            .map_err(|e| ReactionError::new(&self.id, e))?;
        file.flush()
            .await
            .map_err(|e| ReactionError::new(&self.id, e))?;
        match delivery {
            Delivery::Reset { epoch, .. } => {
                *entry = Written {
                    epoch: *epoch,
                    sequence: None,
                }
            }
            Delivery::SnapshotDone { sequence, .. } => entry.sequence = *sequence,
            Delivery::Change(change) => {
                *entry = Written {
                    epoch: change.epoch,
                    sequence: Some(change.span.last),
                }
            }
            Delivery::SnapshotRows { .. } => {}
        }
        Ok(())
    }
}
