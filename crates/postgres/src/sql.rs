//! The statements the store sends, with its schema filled in once at connect. Each is
//! prepared once per pooled connection (`prepare_cached`); the commit, clear, removal,
//! acquire and reclaim logic lives in the schema's PL/pgSQL functions (`migrations/v*.sql`),
//! so each of those is one statement and one round trip.

use crate::migrations::quoted;

/// Statement texts of one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    pub commit: String,
    pub query_info: String,
    pub clear: String,
    pub remove: String,
    pub read_outbox: String,
    pub checkpoint: String,
    pub save_checkpoint: String,
    pub delete_checkpoint: String,
    pub list_queries: String,
    pub probe: String,
    /// `flush`: the probe write in a transaction committed with `synchronous_commit = on`.
    pub flush: String,
    pub snapshot_meta: String,
    /// No `ORDER BY` (the contract promises no order): the planner may then read a large
    /// query in heap order (a sequential or bitmap scan), about three times faster than
    /// walking the primary key for a million rows.
    pub snapshot_cursor: String,
    pub acquire: String,
    pub renew: String,
    pub release: String,
    pub holder: String,
    pub reclaim_step: String,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Sql {
        let s = quoted(schema);
        let probe = format!(
            "INSERT INTO {s}.writable_probe (id, at) VALUES (1, clock_timestamp()) \
             ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at"
        );
        Sql {
            commit: format!(
                "SELECT * FROM {s}.commit_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            query_info: format!(
                "SELECT seq, row_count, epoch FROM {s}.queries WHERE query_id = $1 AND live"
            ),
            clear: format!("SELECT * FROM {s}.clear_query($1, $2, $3)"),
            remove: format!("SELECT * FROM {s}.remove_query($1, $2, $3)"),
            // One statement, so the eviction mark and the entries come from one snapshot: a
            // commit evicting in between cannot turn a gap into a silent partial answer.
            read_outbox: format!(
                "SELECT q.evicted_through, o.first_seq, o.last_seq, o.payload \
                 FROM {s}.queries q LEFT JOIN LATERAL ( \
                     SELECT first_seq, last_seq, payload FROM {s}.outbox \
                     WHERE qid = q.qid AND epoch = q.epoch AND last_seq >= $2 \
                     ORDER BY last_seq LIMIT $3) o ON true \
                 WHERE q.query_id = $1 AND q.live \
                 ORDER BY o.last_seq"
            ),
            checkpoint: format!(
                "SELECT seq, config_hash FROM {s}.checkpoints \
                 WHERE query_id = $1 AND reaction_id = $2"
            ),
            save_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (query_id, reaction_id, seq, config_hash) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (query_id, reaction_id) \
                 DO UPDATE SET seq = EXCLUDED.seq, config_hash = EXCLUDED.config_hash"
            ),
            delete_checkpoint: format!(
                "DELETE FROM {s}.checkpoints WHERE query_id = $1 AND reaction_id = $2"
            ),
            list_queries: format!(
                "SELECT query_id, seq, row_count, epoch FROM {s}.queries \
                 WHERE live ORDER BY query_id"
            ),
            flush: format!(
                "BEGIN; SET LOCAL synchronous_commit TO on; {probe}; COMMIT"
            ),
            probe,
            snapshot_meta: format!(
                "SELECT qid, seq, row_count, epoch FROM {s}.queries \
                 WHERE query_id = $1 AND live"
            ),
            snapshot_cursor: format!(
                "DECLARE liveresults_snapshot NO SCROLL CURSOR FOR \
                 SELECT sig, data FROM {s}.rows WHERE qid = $1 AND epoch = $2"
            ),
            acquire: format!("SELECT * FROM {s}.acquire_lease($1, $2, $3, $4)"),
            renew: format!(
                "UPDATE {s}.leases SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond' \
                 WHERE query_id = $1 AND token = $2 AND holder IS NOT NULL \
                 AND expires_at > clock_timestamp()"
            ),
            release: format!(
                "UPDATE {s}.leases SET holder = NULL, address = NULL, token = NULL, \
                 expires_at = NULL WHERE query_id = $1 AND token = $2"
            ),
            holder: format!(
                "SELECT holder, address, token, \
                 greatest(0, ceil(extract(epoch FROM expires_at - clock_timestamp()) * 1000))::bigint \
                 FROM {s}.leases WHERE query_id = $1 AND holder IS NOT NULL \
                 AND expires_at > clock_timestamp()"
            ),
            reclaim_step: format!("SELECT {s}.reclaim_step($1)"),
        }
    }
}
