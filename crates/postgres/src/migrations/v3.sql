-- liveresults PostgreSQL store, migration 3: the reclaimer's step deletes by row address,
-- with its plan pinned to the primary key. Placeholders as in v1.sql.
--
-- Why: migration 1's step deleted `WHERE qid = … AND epoch = … AND sig IN (SELECT sig …
-- LIMIT n)`. When the rows table's statistics predate a large cleared query (ANALYZEd while
-- it held a row, then 100,000 rows committed to a query and the query cleared), the planner
-- expects one row on each side and picks a nested-loop semi join that runs the LIMIT
-- subquery again for every outer row: 100,000 x 9,500 heap fetches, 429 s for one step of
-- 10,000 rows on a 100,001-row table (27 minutes for one step on 2.56M rows).
--
-- Now the victims' addresses are collected once (`ARRAY(SELECT ctid … LIMIT n)`, an
-- InitPlan run once per statement) and deleted by a TID scan, so no join exists to go wrong;
-- and the function runs with sequential and bitmap scans off, so the collecting scan is an
-- index scan on the primary key's (qid, epoch) prefix whatever the statistics say: it reads
-- the epoch's rows and nothing else (a sequential scan with LIMIT would read past every
-- other query's rows, and past the dead rows of earlier steps until vacuum comes). Old
-- epochs' rows are never written again, so an address read in the statement cannot move.

CREATE OR REPLACE FUNCTION {schema}.reclaim_step(p_batch integer)
RETURNS bigint LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
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
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM {schema}.rows
                              WHERE qid = t.qid AND epoch = t.epoch LIMIT p_batch));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n < p_batch THEN
        DELETE FROM {schema}.outbox WHERE qid = t.qid AND epoch = t.epoch;
        DELETE FROM {schema}.reclaim WHERE qid = t.qid AND epoch = t.epoch;
    END IF;
    RETURN n;
END;
$$;
