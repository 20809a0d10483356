//! What to consume and how: the streams, the consumer group and the bounds of one consumer.

use std::str::FromStr;
use std::time::Duration;

use crate::error::StreamSourceError;

/// The suffix Drasi gives the stream of a query's results (`{query}-results`).
pub const DRASI_RESULTS_SUFFIX: &str = "-results";

/// The suffix of the stream an undecodable entry is moved to (`<stream>-deadletter`).
pub const DEAD_LETTER_SUFFIX: &str = "-deadletter";

/// The stream field holding the event (or its CloudEvent envelope). Dapr's Redis pub/sub and
/// Drasi's platform reaction both write the JSON into a field named `data`.
pub const DEFAULT_FIELD: &str = "data";

/// Largest entry accepted by default (16 MiB, the NDJSON line limit).
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 16 << 20;

/// Most entries one consumer may hold in flight (read, not yet acknowledged).
pub const MAX_BATCH: usize = 100_000;

/// Default time-to-live of the consumer lock (renewed every third of it).
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);

/// Default number of deliveries after which an entry the runtime keeps refusing for good is
/// dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// The longest pause of a stream after refusals (unless the first pause is longer).
pub const MAX_REFUSAL_PAUSE: Duration = Duration::from_secs(60);

/// One stream to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream's key.
    pub stream: String,
    /// The query every event on the stream must belong to; an event of another query is
    /// dead-lettered (it was published to the wrong stream). `None` accepts any query.
    pub query_id: Option<String>,
}

impl StreamSpec {
    /// `stream`, accepting events of any query.
    pub fn new(stream: impl Into<String>) -> Self {
        StreamSpec {
            stream: stream.into(),
            query_id: None,
        }
    }

    /// The stream Drasi publishes `query_id`'s results to (`{query_id}-results`), accepting
    /// only that query's events.
    pub fn drasi_query(query_id: &str) -> Self {
        StreamSpec {
            stream: format!("{query_id}{DRASI_RESULTS_SUFFIX}"),
            query_id: Some(query_id.to_owned()),
        }
    }

    /// The stream undecodable entries of this stream are moved to.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}{DEAD_LETTER_SUFFIX}", self.stream)
    }
}

impl FromStr for StreamSpec {
    type Err = String;

    /// `NAME` (any query) or `NAME=QUERY` (only QUERY's events), as the command line spells it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (stream, query_id) = match text.split_once('=') {
            Some((_, "")) => {
                return Err(format!(
                    "{text:?}: the query after '=' is empty (NAME or NAME=QUERY)"
                ))
            }
            Some((stream, query)) => (stream, Some(query.to_owned())),
            None => (text, None),
        };
        if stream.is_empty() {
            return Err(format!(
                "{text:?}: the stream name is empty (NAME or NAME=QUERY)"
            ));
        }
        Ok(StreamSpec {
            stream: stream.to_owned(),
            query_id,
        })
    }
}

/// How a [`crate::StreamSource`] consumes. Build it with [`StreamSourceConfig::new`] and change
/// the public fields; [`crate::StreamSource::new`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSourceConfig {
    /// The streams. The group is created on each (and the stream with it) if missing.
    pub streams: Vec<StreamSpec>,
    /// The consumer group.
    pub group: String,
    /// This consumer's name in the group. Keep it stable across restarts: entries read but not
    /// yet acknowledged stay assigned to the name and are read again by the next run using it.
    pub consumer: String,
    /// Most entries in flight (read and not yet acknowledged) at once, over all streams; also
    /// the page size of every read and claim. At least the number of streams. Default 256.
    pub batch: usize,
    /// How long one read waits for new entries when there is nothing in flight (also the
    /// longest a shutdown waits for a read). Default 1 s.
    pub block: Duration,
    /// How long an entry must have been pending with another consumer before this one claims
    /// it (that consumer is taken for dead). Longer than the slowest commit, or a live
    /// consumer's entries are taken from it. Default 60 s.
    pub claim_idle: Duration,
    /// How often pending entries of dead consumers are claimed while running (they are
    /// claimed at start as well). Default: every `claim_idle`.
    pub claim_every: Option<Duration>,
    /// Largest entry accepted, in bytes (its fields and values together); a larger one is
    /// dead-lettered. Default 16 MiB.
    pub max_entry_bytes: usize,
    /// The field holding the event. Default `data`.
    pub field: String,
    /// Time-to-live of the lock that makes this consumer the only one reading these streams
    /// in the group (one key per stream, taken all at once); it is renewed every third of
    /// it. A consumer that cannot take the lock waits as a stand-by; one that crashed holds
    /// it until it expires (a restart under the same name waits that long too). Reads are
    /// cut to what is left of the lock, less a third. From 30 ms to 1 hour. Default 10 s.
    pub lock_ttl: Duration,
    /// Deliveries (Redis's count, which restarts do not reset) after which an entry the
    /// runtime still refuses for good (its query stopped by a sequence gap, deleted
    /// upstream) is moved to the dead-letter stream with the refusal as the reason. At least
    /// 1. Default 5.
    pub max_deliveries: u32,
    /// How long a stream waits after the runtime refused one of its entries before trying
    /// that entry again; doubled after each further refusal, up to the larger of this and
    /// [`MAX_REFUSAL_PAUSE`], and back to this after a commit. From 1 ms to 1 hour.
    /// Default 1 s.
    pub refusal_pause: Duration,
}

impl StreamSourceConfig {
    /// `streams` consumed as `consumer` of `group`, with the defaults above.
    pub fn new(
        streams: Vec<StreamSpec>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        StreamSourceConfig {
            streams,
            group: group.into(),
            consumer: consumer.into(),
            batch: 256,
            block: Duration::from_secs(1),
            claim_idle: Duration::from_secs(60),
            claim_every: None,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            field: DEFAULT_FIELD.to_owned(),
            lock_ttl: DEFAULT_LOCK_TTL,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            refusal_pause: Duration::from_secs(1),
        }
    }

    /// The longest pause after refusals.
    pub(crate) fn max_refusal_pause(&self) -> Duration {
        self.refusal_pause.max(MAX_REFUSAL_PAUSE)
    }

    /// The interval of the periodic claim.
    pub(crate) fn claim_interval(&self) -> Duration {
        self.claim_every.unwrap_or(self.claim_idle)
    }

    /// Refuses what cannot work, naming the setting.
    pub(crate) fn validate(&self) -> Result<(), StreamSourceError> {
        let refuse = |message: String| Err(StreamSourceError::Config(message));
        if self.streams.is_empty() {
            return refuse("no stream to consume".into());
        }
        for (i, spec) in self.streams.iter().enumerate() {
            if spec.stream.is_empty() {
                return refuse("a stream name is empty".into());
            }
            if self.streams[..i].iter().any(|s| s.stream == spec.stream) {
                return refuse(format!("stream {:?} is listed twice", spec.stream));
            }
            if spec.stream.ends_with(DEAD_LETTER_SUFFIX) {
                return refuse(format!(
                    "stream {:?} is a dead-letter stream (its entries are the ones that could \
                     not be decoded)",
                    spec.stream
                ));
            }
        }
        if self.group.is_empty() || self.consumer.is_empty() {
            return refuse("the group and the consumer need a name".into());
        }
        if self.batch < self.streams.len() || self.batch > MAX_BATCH {
            return refuse(format!(
                "batch {} must be from the number of streams ({}) to {MAX_BATCH}",
                self.batch,
                self.streams.len()
            ));
        }
        // BLOCK 0 means "forever" to Redis: a shutdown would never be noticed.
        if self.block.as_millis() == 0 || self.block > Duration::from_secs(3600) {
            return refuse("block must be from 1 ms to 1 hour".into());
        }
        // Zero would take entries from consumers that are alive and still committing them.
        if self.claim_idle.as_millis() == 0 {
            return refuse("claim_idle must be at least 1 ms".into());
        }
        if self.claim_interval().as_millis() == 0 {
            return refuse("claim_every must be at least 1 ms".into());
        }
        if self.max_entry_bytes == 0 {
            return refuse("max_entry_bytes must be at least 1".into());
        }
        if self.field.is_empty() {
            return refuse("the event field needs a name".into());
        }
        // Renewals every third of it must fit a round trip; PX takes whole milliseconds.
        if self.lock_ttl < Duration::from_millis(30) || self.lock_ttl > Duration::from_secs(3600) {
            return refuse("lock_ttl must be from 30 ms to 1 hour".into());
        }
        if self.max_deliveries == 0 {
            return refuse("max_deliveries must be at least 1".into());
        }
        if self.refusal_pause.as_millis() == 0 || self.refusal_pause > Duration::from_secs(3600) {
            return refuse("refusal_pause must be from 1 ms to 1 hour".into());
        }
        Ok(())
    }
}

/// Milliseconds of `d` for a Redis argument (saturating: no duration here comes near).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_the_command_line_spells_them() {
        assert_eq!(
            "orders-results".parse::<StreamSpec>(),
            Ok(StreamSpec::new("orders-results"))
        );
        assert_eq!(
            "s=orders".parse::<StreamSpec>(),
            Ok(StreamSpec {
                stream: "s".into(),
                query_id: Some("orders".into())
            })
        );
        assert!("=q".parse::<StreamSpec>().is_err());
        assert!("s=".parse::<StreamSpec>().is_err());
        assert_eq!(
            StreamSpec::drasi_query("orders"),
            "orders-results=orders".parse().unwrap()
        );
        assert_eq!(
            StreamSpec::new("s").dead_letter_stream(),
            "s-deadletter".to_owned()
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let good = StreamSourceConfig::new(vec![StreamSpec::new("a")], "g", "c");
        assert!(good.validate().is_ok());
        type Change = fn(&mut StreamSourceConfig);
        let cases: [(&str, Change); 11] = [
            ("no stream", |c| c.streams.clear()),
            ("twice", |c| c.streams.push(StreamSpec::new("a"))),
            ("dead-letter", |c| {
                c.streams = vec![StreamSpec::new("a-deadletter")];
            }),
            ("batch", |c| c.batch = 0),
            ("block", |c| c.block = Duration::ZERO),
            ("claim_idle", |c| c.claim_idle = Duration::ZERO),
            ("max_entry_bytes", |c| c.max_entry_bytes = 0),
            ("name", |c| c.consumer.clear()),
            ("lock_ttl", |c| c.lock_ttl = Duration::from_millis(29)),
            ("max_deliveries", |c| c.max_deliveries = 0),
            ("refusal_pause", |c| c.refusal_pause = Duration::ZERO),
        ];
        for (what, change) in cases {
            let mut config = good.clone();
            change(&mut config);
            let err = config.validate().expect_err(what).to_string();
            assert!(!err.is_empty(), "{what}");
        }
    }
}
