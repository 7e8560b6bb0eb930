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

CREATE FUNCTION evoforge_focus_uses_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO focus_uses AS f (run_id, item_id, uses)
    SELECT run_id, cognition_ids[1], count(*) FROM inserted_nodes WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2
    ON CONFLICT (run_id, item_id) DO UPDATE SET uses = f.uses + excluded.uses;
    RETURN NULL;
END $$;
CREATE TRIGGER nodes_focus_uses_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS inserted_nodes FOR EACH STATEMENT EXECUTE FUNCTION evoforge_focus_uses_insert();

-- Only an UPDATE of rows that are there: a run's delete cascades to its focus_uses rows as well, in either order.
CREATE FUNCTION evoforge_focus_uses_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM focus_uses f USING (
        SELECT run_id, cognition_ids[1] AS item_id, count(*) AS n FROM deleted_nodes
        WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2) d
    WHERE f.run_id = d.run_id AND f.item_id = d.item_id AND f.uses <= d.n;
    UPDATE focus_uses f SET uses = f.uses - d.n FROM (
        SELECT run_id, cognition_ids[1] AS item_id, count(*) AS n FROM deleted_nodes
        WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2) d
    WHERE f.run_id = d.run_id AND f.item_id = d.item_id;
    RETURN NULL;
END $$;
CREATE TRIGGER nodes_focus_uses_delete AFTER DELETE ON nodes
    REFERENCING OLD TABLE AS deleted_nodes FOR EACH STATEMENT EXECUTE FUNCTION evoforge_focus_uses_delete();

-- The nodes recorded before this version.
INSERT INTO focus_uses (run_id, item_id, uses)
SELECT run_id, cognition_ids[1], count(*) FROM nodes WHERE cardinality(cognition_ids) > 0 GROUP BY 1, 2;
