-- EvoForge schema, version 6: how many of a run's nodes had each cognition item as their Researcher's focus (the
-- first item shown, nodes.cognition_ids[1]). The sampler reads it every round to move the least used prior to the
-- front; counting the nodes instead grew with node memory (55-89 ms at 100k nodes). Triggers keep it on every
-- insert path (INSERT, COPY) and on deletes; a node's cognition_ids are written with the node and never updated.

CREATE TABLE focus_uses (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    item_id text NOT NULL,
    uses    bigint NOT NULL CHECK (uses > 0),
    PRIMARY KEY (run_id, item_id)
);

-- On a delete, only rows that are there are changed: a run's delete cascades to its focus_uses rows too, in either order.
CREATE FUNCTION evoforge_focus_uses_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO focus_uses AS f (run_id, item_id, uses)
        SELECT run_id, cognition_ids[1], count(*) FROM changed_nodes WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2
        ON CONFLICT (run_id, item_id) DO UPDATE SET uses = f.uses + excluded.uses;
    ELSE
        WITH removed AS (
            SELECT run_id, cognition_ids[1] AS item_id, count(*) AS n FROM changed_nodes
            WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2),
        emptied AS (
            DELETE FROM focus_uses f USING removed r
            WHERE f.run_id = r.run_id AND f.item_id = r.item_id AND f.uses <= r.n RETURNING f.run_id, f.item_id)
        UPDATE focus_uses f SET uses = f.uses - r.n FROM removed r
        WHERE f.run_id = r.run_id AND f.item_id = r.item_id
          AND NOT EXISTS (SELECT 1 FROM emptied e WHERE e.run_id = r.run_id AND e.item_id = r.item_id);
    END IF;
    RETURN NULL;
END $$;
-- Before the count of the nodes already there: their lock holds off inserts until this migration commits.
CREATE TRIGGER nodes_focus_uses_insert AFTER INSERT ON nodes REFERENCING NEW TABLE AS changed_nodes FOR EACH STATEMENT EXECUTE FUNCTION evoforge_focus_uses_change();
CREATE TRIGGER nodes_focus_uses_delete AFTER DELETE ON nodes REFERENCING OLD TABLE AS changed_nodes FOR EACH STATEMENT EXECUTE FUNCTION evoforge_focus_uses_change();

-- The nodes recorded before this version.
INSERT INTO focus_uses (run_id, item_id, uses)
SELECT run_id, cognition_ids[1], count(*) FROM nodes WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2;
