-- liveresults PostgreSQL store, migration 1: tables and functions.
-- `{schema}` is replaced by the store's schema name (validated: [a-z_][a-z0-9_]*, quoted) and
-- `{channel}` by its NOTIFY channel. docs/FORMAT.md, section "PostgreSQL layout", describes
-- every table and column.
--
-- Number mappings (the Rust side is crates/postgres/src/codec.rs):
--   * sequences, row signatures and config hashes use the whole u64 range and are stored as
--     BIGINT `u - 2^63` (the u64's bits with the top bit flipped), so BIGINT order is u64 order;
--   * epochs, row counts, byte counts and fencing tokens are plain non-negative BIGINTs.

CREATE TABLE {schema}.queries (
    -- A surrogate key, so the rows and outbox tables do not repeat long ids in every key.
    qid             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- bytea, not text: a query id may contain NUL, which text cannot; bytea compares
    -- bytewise, which is the order of Rust strings.
    query_id        bytea PRIMARY KEY,
    -- false: the removed marker (the query reads as unknown; `epoch` is where a re-created
    -- query starts).
    live            boolean NOT NULL,
    epoch           bigint NOT NULL CHECK (epoch >= 0),
    seq             bigint,
    row_count       bigint NOT NULL CHECK (row_count >= 0),
    outbox_entries  bigint NOT NULL CHECK (outbox_entries >= 0),
    outbox_bytes    bigint NOT NULL CHECK (outbox_bytes >= 0),
    evicted_through bigint
);

-- Rows of every epoch; only (qid, current epoch) is live. Older epochs are listed in
-- `reclaim` and deleted in small batches in the background.
CREATE TABLE {schema}.rows (
    qid   bigint NOT NULL,
    epoch bigint NOT NULL,
    sig   bigint NOT NULL,
    data  bytea NOT NULL,
    PRIMARY KEY (qid, epoch, sig)
);

CREATE TABLE {schema}.outbox (
    qid       bigint NOT NULL,
    epoch     bigint NOT NULL,
    last_seq  bigint NOT NULL,
    first_seq bigint NOT NULL,
    bytes     bigint NOT NULL,
    payload   bytea NOT NULL,
    PRIMARY KEY (qid, epoch, last_seq)
);

-- (qid, epoch) pairs whose rows and outbox entries are garbage (cleared or removed).
CREATE TABLE {schema}.reclaim (
    qid   bigint NOT NULL,
    epoch bigint NOT NULL,
    PRIMARY KEY (qid, epoch)
);

CREATE TABLE {schema}.checkpoints (
    query_id    bytea NOT NULL,
    reaction_id bytea NOT NULL,
    seq         bigint,
    config_hash bigint NOT NULL,
    PRIMARY KEY (query_id, reaction_id)
);

-- One row per query id that was ever committed to or leased; never deleted, since
-- `last_token` must outlive every incarnation of the id (tokens never repeat). The lease is
-- live while `holder` is set and `expires_at` is after the database's clock_timestamp().
CREATE TABLE {schema}.leases (
    query_id   bytea PRIMARY KEY,
    last_token bigint NOT NULL DEFAULT 0 CHECK (last_token >= 0),
    holder     text,
    address    text,
    token      bigint,
    expires_at timestamptz
);

-- Written by check_writable and flush; nothing reads it.
CREATE TABLE {schema}.writable_probe (
    id integer PRIMARY KEY,
    at timestamptz NOT NULL
);

-- One commit, all or nothing (the function runs in the caller's transaction, one statement).
-- Order: fence check (lease row locked FOR SHARE, created if missing so that an acquire
-- waits for this commit), meta row locked FOR UPDATE (created if missing), sequence check,
-- rows, count, outbox with trimming, meta update, NOTIFY. A fenced or regressing commit
-- returns its status before writing anything.
CREATE FUNCTION {schema}.commit_batch(
    p_id bytea, p_notice text, p_fence bigint,
    p_sequenced boolean, p_first bigint, p_last bigint, p_payload bytea,
    p_max_entries bigint, p_max_bytes bigint,
    p_up_sigs bigint[], p_up_data bytea[], p_del_sigs bigint[])
RETURNS TABLE (r_status text, r_seq bigint, r_row_count bigint, r_inserted bigint,
               r_deleted bigint, r_epoch bigint, r_holder text, r_token bigint)
LANGUAGE plpgsql AS $$
DECLARE
    l record;
    q record;
    e record;
    v_live boolean;
    v_ins bigint := 0;
    v_del bigint := 0;
    v_count bigint;
    v_seq bigint;
    v_entries bigint;
    v_bytes bigint;
    v_evicted bigint;
BEGIN
    SELECT holder, token, expires_at INTO l
      FROM {schema}.leases WHERE query_id = p_id FOR SHARE;
    IF NOT FOUND THEN
        INSERT INTO {schema}.leases (query_id) VALUES (p_id) ON CONFLICT DO NOTHING;
        SELECT holder, token, expires_at INTO l
          FROM {schema}.leases WHERE query_id = p_id FOR SHARE;
    END IF;
    v_live := l.holder IS NOT NULL AND l.expires_at > clock_timestamp();
    IF (p_fence IS NULL AND v_live)
       OR (p_fence IS NOT NULL AND (NOT v_live OR l.token IS DISTINCT FROM p_fence)) THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, NULL::bigint, NULL::bigint,
            NULL::bigint, NULL::bigint,
            CASE WHEN v_live THEN l.holder END, CASE WHEN v_live THEN l.token END;
        RETURN;
    END IF;

    SELECT * INTO q FROM {schema}.queries WHERE query_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {schema}.queries (query_id, live, epoch, seq, row_count, outbox_entries,
                                      outbox_bytes, evicted_through)
            VALUES (p_id, true, 0, NULL, 0, 0, 0, NULL) ON CONFLICT DO NOTHING;
        SELECT * INTO q FROM {schema}.queries WHERE query_id = p_id FOR UPDATE;
    END IF;
    IF NOT q.live THEN
        -- Re-created after a removal: nothing of the removed query counts, and the epoch
        -- is the marker's floor.
        q.seq := NULL; q.row_count := 0; q.outbox_entries := 0; q.outbox_bytes := 0;
        q.evicted_through := NULL;
    END IF;
    IF p_sequenced AND q.seq IS NOT NULL AND p_first <= q.seq THEN
        RETURN QUERY SELECT 'regression'::text, q.seq, NULL::bigint, NULL::bigint,
            NULL::bigint, q.epoch, NULL::text, NULL::bigint;
        RETURN;
    END IF;

    IF cardinality(p_del_sigs) > 0 THEN
        DELETE FROM {schema}.rows
         WHERE qid = q.qid AND epoch = q.epoch AND sig = ANY (p_del_sigs);
        GET DIAGNOSTICS v_del = ROW_COUNT;
    END IF;
    IF cardinality(p_up_sigs) > 0 THEN
        -- A row version written by INSERT has xmax 0; one written by ON CONFLICT DO UPDATE
        -- carries the updating transaction in xmax. So the RETURNING list says which
        -- upserts created a row, without a second index probe per row.
        WITH up AS (
            INSERT INTO {schema}.rows (qid, epoch, sig, data)
            SELECT q.qid, q.epoch, u.s, u.d FROM unnest(p_up_sigs, p_up_data) AS u (s, d)
            ON CONFLICT (qid, epoch, sig) DO UPDATE SET data = EXCLUDED.data
            RETURNING (xmax = '0'::xid) AS created)
        SELECT count(*) FILTER (WHERE created) INTO v_ins FROM up;
    END IF;
    v_count := q.row_count + v_ins - v_del;
    IF v_count < 0 THEN
        RAISE EXCEPTION 'row count % cannot take % inserted and % deleted rows',
            q.row_count, v_ins, v_del USING ERRCODE = 'LR001';
    END IF;

    v_seq := q.seq;
    v_entries := q.outbox_entries;
    v_bytes := q.outbox_bytes;
    v_evicted := q.evicted_through;
    IF p_sequenced THEN
        INSERT INTO {schema}.outbox (qid, epoch, last_seq, first_seq, bytes, payload)
            VALUES (q.qid, q.epoch, p_last, p_first, length(p_payload), p_payload);
        v_seq := p_last;
        v_entries := v_entries + 1;
        v_bytes := v_bytes + length(p_payload);
        -- The retention rule of liveresults_core::outbox_window: evict the oldest entries
        -- until both limits hold, never the entry just added.
        IF v_entries > p_max_entries OR v_bytes > p_max_bytes THEN
            FOR e IN SELECT last_seq, bytes FROM {schema}.outbox
                      WHERE qid = q.qid AND epoch = q.epoch ORDER BY last_seq LOOP
                EXIT WHEN (v_entries <= p_max_entries AND v_bytes <= p_max_bytes)
                       OR e.last_seq = p_last;
                DELETE FROM {schema}.outbox
                 WHERE qid = q.qid AND epoch = q.epoch AND last_seq = e.last_seq;
                v_entries := v_entries - 1;
                v_bytes := v_bytes - e.bytes;
                v_evicted := e.last_seq;
            END LOOP;
        END IF;
    END IF;

    UPDATE {schema}.queries
       SET live = true, seq = v_seq, row_count = v_count, outbox_entries = v_entries,
           outbox_bytes = v_bytes, evicted_through = v_evicted
     WHERE qid = q.qid;
    PERFORM pg_notify('{channel}', q.epoch::text || ':' ||
        coalesce(lpad(to_hex(v_seq # (-9223372036854775808)::bigint), 16, '0'), '') ||
        ':' || p_notice);
    RETURN QUERY SELECT 'ok'::text, v_seq, v_count, v_ins, v_del, q.epoch,
        NULL::text, NULL::bigint;
END;
$$;

-- Clear: O(1) whatever the query's size. The epoch moves on, the old epoch's rows and
-- outbox are handed to the reclaimer, checkpoints (a few rows) go at once.
-- Returns the new epoch, or NULL for a query the store does not know.
CREATE FUNCTION {schema}.clear_query(p_id bytea, p_notice text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    SELECT qid, epoch INTO q FROM {schema}.queries WHERE query_id = p_id AND live FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF q.epoch = 9223372036854775807 THEN
        RAISE EXCEPTION 'epoch % cannot be incremented', q.epoch USING ERRCODE = 'LR001';
    END IF;
    INSERT INTO {schema}.reclaim (qid, epoch) VALUES (q.qid, q.epoch) ON CONFLICT DO NOTHING;
    UPDATE {schema}.queries
       SET epoch = q.epoch + 1, seq = NULL, row_count = 0, outbox_entries = 0,
           outbox_bytes = 0, evicted_through = NULL
     WHERE qid = q.qid;
    DELETE FROM {schema}.checkpoints WHERE query_id = p_id;
    PERFORM pg_notify('{channel}', (q.epoch + 1)::text || '::' || p_notice);
    RETURN q.epoch + 1;
END;
$$;

-- Remove: the meta row becomes the removed marker (live = false, epoch = the floor a
-- re-created query starts at); rows and outbox go to the reclaimer; checkpoints go at once,
-- also for a query the store does not know. Returns the floor, or NULL when unknown.
CREATE FUNCTION {schema}.remove_query(p_id bytea, p_notice text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    DELETE FROM {schema}.checkpoints WHERE query_id = p_id;
    SELECT qid, epoch INTO q FROM {schema}.queries WHERE query_id = p_id AND live FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF q.epoch = 9223372036854775807 THEN
        RAISE EXCEPTION 'epoch % cannot be incremented', q.epoch USING ERRCODE = 'LR001';
    END IF;
    INSERT INTO {schema}.reclaim (qid, epoch) VALUES (q.qid, q.epoch) ON CONFLICT DO NOTHING;
    UPDATE {schema}.queries
       SET live = false, epoch = q.epoch + 1, seq = NULL, row_count = 0, outbox_entries = 0,
           outbox_bytes = 0, evicted_through = NULL
     WHERE qid = q.qid;
    PERFORM pg_notify('{channel}', '0::' || p_notice);
    RETURN q.epoch + 1;
END;
$$;

-- Takes the lease when it is free, expired or held under the same holder name; otherwise
-- reports the live one. The lease row is locked FOR UPDATE, so an acquire waits for every
-- commit that checked the previous lease (they hold it FOR SHARE) and every later commit
-- sees the new token. Times are the database's clock_timestamp() (now() would be the
-- transaction's start, stale after a lock wait).
CREATE FUNCTION {schema}.acquire_lease(p_id bytea, p_holder text, p_address text,
                                       p_ttl_ms bigint)
RETURNS TABLE (r_granted boolean, r_holder text, r_address text, r_token bigint,
               r_left_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    l record;
    v_now timestamptz;
BEGIN
    INSERT INTO {schema}.leases (query_id) VALUES (p_id) ON CONFLICT DO NOTHING;
    SELECT * INTO l FROM {schema}.leases WHERE query_id = p_id FOR UPDATE;
    v_now := clock_timestamp();
    IF l.holder IS NOT NULL AND l.expires_at > v_now AND l.holder <> p_holder THEN
        RETURN QUERY SELECT false, l.holder, l.address, l.token,
            greatest(0, ceil(extract(epoch FROM l.expires_at - v_now) * 1000))::bigint;
        RETURN;
    END IF;
    IF l.last_token = 9223372036854775807 THEN
        RAISE EXCEPTION 'fencing token counter at %', l.last_token USING ERRCODE = 'LR001';
    END IF;
    UPDATE {schema}.leases
       SET last_token = l.last_token + 1, holder = p_holder, address = p_address,
           token = l.last_token + 1, expires_at = v_now + p_ttl_ms * interval '1 millisecond'
     WHERE query_id = p_id;
    RETURN QUERY SELECT true, NULL::text, NULL::text, l.last_token + 1, NULL::bigint;
END;
$$;

-- One step of the background reclaimer: up to p_batch rows of one garbage (qid, epoch)
-- pair, then, once its rows are gone, its outbox entries (bounded by retention) and the
-- pair itself. SKIP LOCKED lets the reclaimers of several handles or hosts share the work.
-- Returns the rows deleted, or -1 when there is no work.
CREATE FUNCTION {schema}.reclaim_step(p_batch integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    SELECT qid, epoch INTO t FROM {schema}.reclaim
     ORDER BY qid, epoch LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    DELETE FROM {schema}.rows
     WHERE qid = t.qid AND epoch = t.epoch
       AND sig IN (SELECT sig FROM {schema}.rows
                    WHERE qid = t.qid AND epoch = t.epoch LIMIT p_batch);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n < p_batch THEN
        DELETE FROM {schema}.outbox WHERE qid = t.qid AND epoch = t.epoch;
        DELETE FROM {schema}.reclaim WHERE qid = t.qid AND epoch = t.epoch;
    END IF;
    RETURN n;
END;
$$;
