-- EvoForge schema, version 2: state of the sampling policies (UCB1 statistics, top-k pools, MAP-Elites
-- archives and migrations), the island of every selection, novelty verdicts, provenance indexes.

ALTER TABLE nodes ADD COLUMN novelty jsonb NOT NULL DEFAULT '{}';
ALTER TABLE selections ADD COLUMN island integer NOT NULL DEFAULT 0;

-- "Eligible" nodes (valid, with a finite score) are the ones policies choose from; these partial indexes
-- let greedy / top-k / random read them without touching the rest of a 100k-node run.
CREATE INDEX nodes_run_eligible_score_idx ON nodes (run_id, score)
    WHERE valid AND score IS NOT NULL AND score > '-Infinity'::float8 AND score < 'Infinity'::float8;
CREATE INDEX nodes_cognition_ids_idx ON nodes USING gin (cognition_ids);
CREATE INDEX cognition_node_idx ON cognition (node_id) WHERE node_id IS NOT NULL;

-- Per run: how many eligible nodes there are (and so the last sequence number handed out), how many
-- selections chose an eligible parent (UCB1's N), and the reference scores the UCB1 keys were computed with.
CREATE TABLE run_stats (
    run_id          text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    eligible        bigint NOT NULL DEFAULT 0,
    eligible_visits bigint NOT NULL DEFAULT 0,
    low_ref         double precision,
    high_ref        double precision
);

-- One narrow row per node, kept up to date by the triggers below on every insert path (INSERT, COPY), so
-- policies never scan the wide nodes table. For UCB1, a node's mean reward over itself and its children
-- (scores scaled to [0, 1] by the run's range [lo, hi], a failed child earning 0) is, for a maximised
-- score, (score + child_score_sum - lo * (1 + eligible_children)) / (1 + children) / (hi - lo). key_max
-- is that numerator with lo replaced by low_ref (key_min likewise for a minimised score, with high_ref),
-- so an index on (visits, key) finds each visit group's best node; sampling.py re-keys a run when its
-- range has moved too far from the references.
CREATE TABLE node_stats (
    run_id            text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id           text NOT NULL,
    eligible          boolean NOT NULL,
    eligible_seq      bigint,
    score             double precision,
    round             integer NOT NULL,
    lane              integer NOT NULL,
    visits            bigint NOT NULL DEFAULT 0,
    children          bigint NOT NULL DEFAULT 0,
    eligible_children bigint NOT NULL DEFAULT 0,
    child_score_sum   double precision NOT NULL DEFAULT 0,
    key_max           double precision,
    key_min           double precision,
    PRIMARY KEY (run_id, node_id)
);
CREATE INDEX node_stats_unvisited_idx ON node_stats (run_id, score) WHERE eligible AND visits = 0;
CREATE UNIQUE INDEX node_stats_seq_idx ON node_stats (run_id, eligible_seq) WHERE eligible;
CREATE INDEX node_stats_key_max_idx ON node_stats (run_id, visits, key_max DESC) WHERE eligible;
CREATE INDEX node_stats_key_min_idx ON node_stats (run_id, visits, key_min DESC) WHERE eligible;

CREATE FUNCTION evoforge_node_stats_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The upsert locks each run's run_stats row until commit, so concurrent inserts number in turn.
    INSERT INTO run_stats AS r (run_id, eligible, low_ref, high_ref)
    SELECT run_id, count(*) FILTER (WHERE ok), min(score) FILTER (WHERE ok), max(score) FILTER (WHERE ok)
    FROM (SELECT run_id, score, valid AND score > '-Infinity'::float8 AND score < 'Infinity'::float8 AS ok
          FROM inserted_nodes) i
    GROUP BY run_id
    ON CONFLICT (run_id) DO UPDATE SET eligible = r.eligible + excluded.eligible,
        low_ref = coalesce(r.low_ref, excluded.low_ref), high_ref = coalesce(r.high_ref, excluded.high_ref);

    INSERT INTO node_stats (run_id, node_id, eligible, eligible_seq, score, round, lane, key_max, key_min)
    SELECT i.run_id, i.id, i.ok,
           CASE WHEN i.ok THEN r.eligible - i.new_eligible
                               + row_number() OVER (PARTITION BY i.run_id, i.ok ORDER BY i.id) END,
           i.score, i.round, i.lane,
           CASE WHEN i.ok THEN i.score - r.low_ref END,
           CASE WHEN i.ok THEN r.high_ref - i.score END
    FROM (SELECT *, count(*) FILTER (WHERE ok) OVER (PARTITION BY run_id) AS new_eligible
          FROM (SELECT run_id, id, score, round, lane,
                       coalesce(valid AND score > '-Infinity'::float8 AND score < 'Infinity'::float8, false) AS ok
                FROM inserted_nodes) flagged) i
    JOIN run_stats r ON r.run_id = i.run_id
    ON CONFLICT DO NOTHING;

    UPDATE node_stats s
    SET children = s.children + c.n,
        eligible_children = s.eligible_children + c.n_eligible,
        child_score_sum = s.child_score_sum + c.total,
        key_max = CASE WHEN s.eligible THEN (s.score + s.child_score_sum + c.total
                  - r.low_ref * (1 + s.eligible_children + c.n_eligible)) / (1 + s.children + c.n) END,
        key_min = CASE WHEN s.eligible THEN (r.high_ref * (1 + s.eligible_children + c.n_eligible)
                  - s.score - s.child_score_sum - c.total) / (1 + s.children + c.n) END
    FROM (
        SELECT run_id, parent_ids[1] AS parent_id, count(*) AS n,
               count(*) FILTER (WHERE valid AND score > '-Infinity'::float8 AND score < 'Infinity'::float8)
                   AS n_eligible,
               coalesce(sum(score) FILTER (WHERE valid AND score > '-Infinity'::float8
                                                 AND score < 'Infinity'::float8), 0) AS total
        FROM inserted_nodes
        WHERE cardinality(parent_ids) > 0
        GROUP BY 1, 2
    ) c, run_stats r
    WHERE s.run_id = c.run_id AND s.node_id = c.parent_id AND r.run_id = s.run_id;
    RETURN NULL;
END $$;
CREATE TRIGGER nodes_stats_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS inserted_nodes FOR EACH STATEMENT EXECUTE FUNCTION evoforge_node_stats_insert();

CREATE FUNCTION evoforge_node_stats_visits() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    direction integer := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    UPDATE node_stats s SET visits = greatest(s.visits + direction * c.n, 0)
    FROM (SELECT run_id, parent_id, count(*) AS n FROM changed_selections GROUP BY 1, 2) c
    WHERE s.run_id = c.run_id AND s.node_id = c.parent_id;
    UPDATE run_stats r SET eligible_visits = greatest(r.eligible_visits + direction * v.n, 0)
    FROM (SELECT c.run_id, count(*) AS n FROM changed_selections c
          JOIN node_stats s ON s.run_id = c.run_id AND s.node_id = c.parent_id AND s.eligible
          GROUP BY c.run_id) v
    WHERE r.run_id = v.run_id;
    RETURN NULL;
END $$;
CREATE TRIGGER selections_visits_insert AFTER INSERT ON selections
    REFERENCING NEW TABLE AS changed_selections FOR EACH STATEMENT EXECUTE FUNCTION evoforge_node_stats_visits();
CREATE TRIGGER selections_visits_delete AFTER DELETE ON selections
    REFERENCING OLD TABLE AS changed_selections FOR EACH STATEMENT EXECUTE FUNCTION evoforge_node_stats_visits();

-- Statistics of the nodes and selections recorded before this version.
INSERT INTO run_stats (run_id, eligible, low_ref, high_ref)
SELECT r.id, count(n.id) FILTER (WHERE n.valid AND n.score > '-Infinity'::float8 AND n.score < 'Infinity'::float8),
       min(n.score) FILTER (WHERE n.valid AND n.score > '-Infinity'::float8 AND n.score < 'Infinity'::float8),
       max(n.score) FILTER (WHERE n.valid AND n.score > '-Infinity'::float8 AND n.score < 'Infinity'::float8)
FROM runs r LEFT JOIN nodes n ON n.run_id = r.id
GROUP BY r.id;
INSERT INTO node_stats (run_id, node_id, eligible, eligible_seq, score, round, lane)
SELECT run_id, id, ok, CASE WHEN ok THEN row_number() OVER (PARTITION BY run_id, ok ORDER BY id) END, score, round, lane
FROM (SELECT *, coalesce(valid AND score > '-Infinity'::float8 AND score < 'Infinity'::float8, false) AS ok
      FROM nodes) flagged;
UPDATE node_stats s
SET children = c.n, eligible_children = c.n_eligible, child_score_sum = c.total
FROM (
    SELECT run_id, parent_ids[1] AS parent_id, count(*) AS n,
           count(*) FILTER (WHERE valid AND score > '-Infinity'::float8 AND score < 'Infinity'::float8)
               AS n_eligible,
           coalesce(sum(score) FILTER (WHERE valid AND score > '-Infinity'::float8
                                             AND score < 'Infinity'::float8), 0) AS total
    FROM nodes
    WHERE cardinality(parent_ids) > 0
    GROUP BY 1, 2
) c
WHERE s.run_id = c.run_id AND s.node_id = c.parent_id;
UPDATE node_stats s SET visits = c.n
FROM (SELECT run_id, parent_id, count(*) AS n FROM selections GROUP BY 1, 2) c
WHERE s.run_id = c.run_id AND s.node_id = c.parent_id;
UPDATE node_stats s
SET key_max = (s.score + s.child_score_sum - r.low_ref * (1 + s.eligible_children)) / (1 + s.children),
    key_min = (r.high_ref * (1 + s.eligible_children) - s.score - s.child_score_sum) / (1 + s.children)
FROM run_stats r WHERE r.run_id = s.run_id AND s.eligible;
UPDATE run_stats r SET eligible_visits = v.n
FROM (SELECT run_id, sum(visits) AS n FROM node_stats WHERE eligible GROUP BY run_id) v
WHERE r.run_id = v.run_id;

-- Small per-run policy state (the top-k pools, whether a MAP-Elites archive has taken in the run's
-- earlier nodes), updated in the same transaction as the selection it serves.
CREATE TABLE policy_state (
    run_id     text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name       text NOT NULL,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);

-- MAP-Elites: per island, the best node of every occupied feature cell. A node may be the elite of
-- cells on several islands (migration copies it); `origin_island` is where it was produced.
CREATE TABLE elites (
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    island        integer NOT NULL,
    cell          integer[] NOT NULL,
    node_id       text NOT NULL,
    features      double precision[] NOT NULL,
    origin_island integer NOT NULL,
    added_round   integer NOT NULL,
    PRIMARY KEY (run_id, island, cell)
);

-- Ring migrations done, one row per (run, round), so a resumed round never migrates twice.
CREATE TABLE migrations (
    run_id   text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    round    integer NOT NULL,
    moved    jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (run_id, round)
);
