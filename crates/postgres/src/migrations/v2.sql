-- liveresults PostgreSQL store, migration 2: clears and removals are fenced like commits
-- (liveresults_core::lease). Placeholders and number mappings as in v1.sql.
--
-- Why in the functions: a host that checked its lease and then cleared could be paused in
-- between, past its lease, and clear the query under its next owner. So the fence is
-- checked inside the clear's (and the removal's) own transaction, with the lease row locked
-- FOR SHARE until it commits, exactly as commit_batch does: an acquire (FOR UPDATE) waits for
-- a clear that checked the previous lease, and a clear after the acquire sees the new token.
--
-- The unfenced functions of migration 1 are dropped rather than kept beside the new ones, so
-- a build from before this migration that is still running fails its clears (function does
-- not exist) instead of clearing under an owner.

DROP FUNCTION {schema}.clear_query(bytea, text);
DROP FUNCTION {schema}.remove_query(bytea, text);

-- The fencing rule (check_fence's): with p_fence the live lease must hold that token;
-- without, no lease may be live. Locks the lease row FOR SHARE until the caller's
-- transaction ends (inserting it if missing, so an acquire always has a row to wait on),
-- and reports the live lease's holder and token, if one is live, for the refusal.
CREATE FUNCTION {schema}.fence_check(p_id bytea, p_fence bigint,
    OUT fence_ok boolean, OUT live_holder text, OUT live_token bigint)
LANGUAGE plpgsql AS $$
DECLARE
    l record;
    v_live boolean;
BEGIN
    SELECT holder, token, expires_at INTO l
      FROM {schema}.leases WHERE query_id = p_id FOR SHARE;
    IF NOT FOUND THEN
        INSERT INTO {schema}.leases (query_id) VALUES (p_id) ON CONFLICT DO NOTHING;
        SELECT holder, token, expires_at INTO l
          FROM {schema}.leases WHERE query_id = p_id FOR SHARE;
    END IF;
    v_live := coalesce(l.holder IS NOT NULL AND l.expires_at > clock_timestamp(), false);
    IF p_fence IS NULL THEN
        fence_ok := NOT v_live;
    ELSE
        fence_ok := v_live AND l.token IS NOT DISTINCT FROM p_fence;
    END IF;
    IF v_live THEN
        live_holder := l.holder;
        live_token := l.token;
    END IF;
END;
$$;

-- Clear: the fence, then as in migration 1 — O(1) whatever the query's size: the epoch moves
-- on, the old epoch's rows and outbox are handed to the reclaimer, checkpoints (a few rows) go
-- at once. Answers ('fenced', NULL, live holder, live token) having written nothing, or
-- ('ok', new epoch, NULL, NULL) with a NULL epoch for a query the store does not know.
-- Lock order: lease row, meta row, checkpoints (as commit_batch and remove_query).
CREATE FUNCTION {schema}.clear_query(p_id bytea, p_notice text, p_fence bigint)
RETURNS TABLE (r_status text, r_epoch bigint, r_holder text, r_token bigint)
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    q record;
BEGIN
    SELECT * INTO f FROM {schema}.fence_check(p_id, p_fence);
    IF NOT f.fence_ok THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, f.live_holder, f.live_token;
        RETURN;
    END IF;
    SELECT qid, epoch INTO q FROM {schema}.queries WHERE query_id = p_id AND live FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'ok'::text, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
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
    RETURN QUERY SELECT 'ok'::text, q.epoch + 1, NULL::text, NULL::bigint;
END;
$$;

-- Remove: the fence, then as in migration 1 — the meta row becomes the removed marker
-- (live = false, epoch = the floor a re-created query starts at); rows and outbox go to the
-- reclaimer; checkpoints go at once, also for a query the store does not know. Answers like
-- clear_query (the epoch is the floor). The meta row is now locked before the checkpoints
-- are deleted, the order clear_query uses, so a clear and a removal cannot deadlock.
CREATE FUNCTION {schema}.remove_query(p_id bytea, p_notice text, p_fence bigint)
RETURNS TABLE (r_status text, r_epoch bigint, r_holder text, r_token bigint)
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    q record;
    v_known boolean;
BEGIN
    SELECT * INTO f FROM {schema}.fence_check(p_id, p_fence);
    IF NOT f.fence_ok THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, f.live_holder, f.live_token;
        RETURN;
    END IF;
    SELECT qid, epoch INTO q FROM {schema}.queries WHERE query_id = p_id AND live FOR UPDATE;
    v_known := FOUND;
    IF v_known AND q.epoch = 9223372036854775807 THEN
        RAISE EXCEPTION 'epoch % cannot be incremented', q.epoch USING ERRCODE = 'LR001';
    END IF;
    DELETE FROM {schema}.checkpoints WHERE query_id = p_id;
    IF NOT v_known THEN
        RETURN QUERY SELECT 'ok'::text, NULL::bigint, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO {schema}.reclaim (qid, epoch) VALUES (q.qid, q.epoch) ON CONFLICT DO NOTHING;
    UPDATE {schema}.queries
       SET live = false, epoch = q.epoch + 1, seq = NULL, row_count = 0, outbox_entries = 0,
           outbox_bytes = 0, evicted_through = NULL
     WHERE qid = q.qid;
    PERFORM pg_notify('{channel}', '0::' || p_notice);
    RETURN QUERY SELECT 'ok'::text, q.epoch + 1, NULL::text, NULL::bigint;
END;
$$;
